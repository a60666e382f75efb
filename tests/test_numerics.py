"""The child process that trains with pinned CPU numerics (pipelines/training/numerics.py):
what it says reaches the caller, its errors are raised again as themselves, a crash is one
clear error, and a child without the pinned settings refuses to train."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from geodelta._numerics import PINNED, pinned_env
from geodelta.errors import ConfigError, ModelError, ReleaseError
from geodelta.pipelines.training.numerics import run_pinned

pytest.importorskip("torch")

_HEAD = (
    "from geodelta.pipelines.training.numerics import child_error, child_say, child_spec\n"
    "from geodelta.errors import ConfigError, ReleaseError\n"
    "spec = child_spec()\n"
)


def test_progress_reaches_the_caller_and_the_child_runs_pinned() -> None:
    said: list[str] = []
    code = _HEAD + (
        "import torch\n"
        "child_say(spec['hello'])\n"
        "child_say(str(torch.backends.cpu.get_cpu_capability()))\n"
        "print('a library prints')\n"
    )
    run_pinned(code, {"hello": "hi there"}, said.append)
    assert said == ["hi there", "DEFAULT"]


@pytest.mark.parametrize(
    ("raise_line", "kind", "path"),
    [
        ("child_error(ConfigError('reference.epochs: 0 is below 1'))", ConfigError, None),
        ("child_error(ReleaseError('no shards of split train', path='/r'))", ReleaseError, "/r"),
    ],
)
def test_the_childs_error_is_raised_again_as_itself(
    raise_line: str, kind: type[Exception], path: str | None
) -> None:
    code = _HEAD + raise_line + "\nraise SystemExit(2)\n"
    message = raise_line.split("'")[1]
    with pytest.raises(kind, match=message) as err:
        run_pinned(code, {}, lambda _m: None)
    assert type(err.value) is kind
    assert getattr(err.value, "path", None) == path


def test_a_crash_is_one_model_error() -> None:
    with pytest.raises(ModelError, match="ended with exit status 3"):
        run_pinned(_HEAD + "raise SystemExit(3)\n", {}, lambda _m: None)


def test_a_child_without_the_pinned_settings_refuses() -> None:
    env = {k: v for k, v in os.environ.items() if k not in PINNED}
    code = (
        "from geodelta.errors import ModelError\n"
        "from geodelta.pipelines.training.numerics import child_spec\n"
        "try:\n    child_spec()\nexcept ModelError as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, input="{}", capture_output=True, text=True
    )
    assert "runs without the pinned numerics" in out.stdout, out.stderr[-2000:]


def test_the_pinned_settings_win_over_the_callers() -> None:
    """A caller's own ATen setting (another machine's kernels) does not reach the child; the
    rest of its environment does."""
    env = pinned_env({"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AUTO", "HOME": "/h"})
    assert env == {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "HOME": "/h"}


# -- the baseline model's inference in a build's worker ---------------------------------------
#: A worker's inference: the annotator loads the weights (pinning the numerics first) and runs
#: them on a fixed random pair (``pinned``); or, as before the pinning, torch's defaults
#: (``defaults``: the model called directly, oneDNN on). Prints a digest of the probabilities and
#: whether the kernels were pinned.
_INFER = """
import hashlib, sys
import numpy as np
rng = np.random.default_rng(0)
pair = (rng.random((4, 64, 64), dtype=np.float32), rng.random((4, 64, 64), dtype=np.float32))
if sys.argv[2] == "defaults":
    from geodelta.annotators.models.change_model import load_model, predict_proba
    (prob,) = predict_proba(load_model(sys.argv[1])[0], [pair], batch_size=1, tile=None)
else:
    from geodelta.annotators.models.baseline import BaselineChangeAnnotator
    model = BaselineChangeAnnotator(sys.argv[1], threads=1, tile=None)
    (prob,) = model.run_inference([pair])
from geodelta._numerics import pinned_here
print(hashlib.sha256(np.ascontiguousarray(prob, dtype=np.float32).tobytes()).hexdigest(),
      pinned_here())
"""

#: What another CPU would give torch, as far as this one can show it: oneDNN, MKL and ATen held
#: to older instruction sets than this machine's.
_OTHER_CPU = {
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    "ATEN_CPU_CAPABILITY": "avx2",
}


def _infer(weights: Path, when: str, extra: dict[str, str]) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PINNED and k not in _OTHER_CPU}
    out = subprocess.run(
        [sys.executable, "-c", _INFER, str(weights), when],
        env={**env, **extra},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    digest, pinned = out.stdout.split()
    return digest, pinned


@pytest.mark.slow
def test_baseline_inference_is_the_same_under_other_instruction_sets(tmp_path: Path) -> None:
    import torch

    from geodelta.annotators.models.change_model import FCSiamDiff, save_model

    torch.manual_seed(0)
    model = FCSiamDiff(4, base_channels=8, dropout=0.0).eval()
    weights = save_model(model, tmp_path, {"bands": ["B02", "B03", "B04", "B08"]}).weights
    here = _infer(weights, "pinned", {})
    other = _infer(weights, "pinned", _OTHER_CPU)
    assert here == other and here[1] == "True"
    # the control: with torch's defaults, the same knobs move the probabilities
    unpinned_here = _infer(weights, "defaults", {})
    unpinned_other = _infer(weights, "defaults", _OTHER_CPU)
    assert unpinned_here[1] == unpinned_other[1] == "False"
    assert unpinned_here[0] != unpinned_other[0]


def test_without_torch_the_baseline_names_the_extra(tmp_path: Path) -> None:
    """Pinning first must not turn the missing-torch message into a traceback."""
    fake = tmp_path / "site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named torch')\n")
    code = (
        "from geodelta.annotators.models.baseline import BaselineChangeAnnotator\n"
        "from geodelta.errors import MissingDependencyError\n"
        "try:\n    BaselineChangeAnnotator('w.pt').load_model()\n"
        "except MissingDependencyError as exc:\n    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "pip install 'geodelta[model]'" in out.stdout, out.stderr[-2000:]
