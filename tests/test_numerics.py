"""The child process that trains with pinned CPU numerics (pipelines/training/numerics.py):
what it says reaches the caller, its errors are raised again as themselves, a crash is one
clear error, and a child without the pinned settings refuses to train."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from geodelta.errors import ConfigError, ModelError, ReleaseError
from geodelta.pipelines.training.numerics import PINNED, pinned_env, run_pinned

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
    assert pinned_env(env)["ATEN_CPU_CAPABILITY"] == "default"
