"""The README's figures are the demo's: ``make demo``'s command is run as a newcomer runs it and
tools/readme_figures.py checks every generated block of README.md against its release (issue
17: the README claimed R@1 0.38, 445 QA items, "about two minutes", an example key of a
quarantined cell and a shard pattern that read 48 of the 50 training samples)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import REPO

sys.path.insert(0, str(REPO / "tools"))
import readme_figures

#: A sample key as the README writes one.
KEY = re.compile(r"\b\d{2}[NS]-\d+-\d{4}-\d{4}_\d{8}_\d{8}\b")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`geodelta demo` exactly as `make demo` runs it (the reference model included)."""
    out = tmp_path_factory.mktemp("readme-demo")
    env = {k: v for k, v in os.environ.items() if k != "GEODELTA_VERBOSE"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "geodelta.pipelines.cli",
            "demo",
            "--out",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "release", proc


@pytest.mark.integration
def test_readme_blocks_match_the_demo_release(
    demo: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    release, _ = demo
    text = (REPO / "README.md").read_text()
    _, changed = readme_figures.rewrite(text, readme_figures.render(release))
    assert changed == [], (
        f"README.md blocks {changed} differ from the demo release: "
        "run `python tools/readme_figures.py build/demo/release --write` after `make demo`"
    )


@pytest.mark.integration
def test_every_key_in_the_readme_is_a_demo_sample(
    demo: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    release, _ = demo
    keys = {k for k, _ in readme_figures._members(release, "json")}
    named = set(KEY.findall((REPO / "README.md").read_text()))
    assert named, "the README names no sample key"
    assert named <= keys, f"keys in README.md that the demo release does not hold: {named - keys}"


@pytest.mark.integration
def test_the_webdataset_snippet_reads_every_training_sample(
    demo: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    import webdataset as wds

    release, _ = demo
    block = readme_figures.webdataset(release)
    url = re.search(r'WebDataset\("build/demo/release/(shards/[^"]+)"', block)
    assert url is not None
    ds = wds.WebDataset(str(release / url.group(1)), shardshuffle=False, empty_check=False)
    n = sum(1 for _ in ds)
    assert n == readme_figures._manifest(release)["splits"]["train"]


@pytest.mark.integration
def test_demo_console_is_geodeltas_own(
    demo: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """Quiet by default: no Beam harness chatter, no progress bars of the model libraries."""
    _, proc = demo
    console = proc.stdout + proc.stderr
    for noise in ("apache_beam", "sdk harness", "apitools", "Loading weights", "INFO"):
        assert noise not in console, noise
    assert len(console.splitlines()) < 40, console
