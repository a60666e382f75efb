"""``geodelta baseline train --device cpu|cuda|auto`` (issue 16): CUDA when torch sees one,
the CPU otherwise; asking for CUDA where there is none is one line, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from geodelta.errors import ModelError  # noqa: E402
from geodelta.pipelines.cli import app  # noqa: E402
from geodelta.pipelines.training.change_model import torch_device  # noqa: E402

ARGS = ["--epochs", "1", "--batch-size", "4", "--workers", "0", "--threads", "1"]
TRAIN = ["baseline", "train", "--shards"]
CUDA = ["--device", "cuda"]


def test_device_names() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert torch_device("auto").type == expected
    assert torch_device("cpu").type == "cpu"
    with pytest.raises(ModelError, match="use cpu, cuda or auto"):
        torch_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: it would train")
def test_cuda_without_a_gpu_is_one_line(demo_release: Any, tmp_path: Path) -> None:
    release = demo_release.release_dir
    res = CliRunner().invoke(
        app,
        ["baseline", "train", "--shards", str(release), "--out", str(tmp_path), *ARGS, *CUDA],
    )
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "--device cpu" in lines[0]
    assert not any(tmp_path.iterdir())


def test_auto_on_cpu_gives_the_cpu_weights(demo_release: Any, tmp_path: Path) -> None:
    """The device does not change what is saved on a CPU machine: same weights hash."""
    release = demo_release.release_dir
    cards = []
    for device in ("cpu", "auto"):
        res = CliRunner().invoke(
            app,
            [*TRAIN, str(release), "--out", str(tmp_path / device), *ARGS, "--device", device],
        )
        assert res.exit_code == 0, res.output
        weights = Path(res.stdout.strip().splitlines()[-1])
        cards.append(json.loads((weights.parent / "card.json").read_text()))
    if torch.cuda.is_available():
        pytest.skip("auto trained on CUDA: weights may differ in the last bits")
    assert cards[0]["sha256"] == cards[1]["sha256"]
