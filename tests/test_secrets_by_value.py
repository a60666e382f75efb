"""Secrets by value, not by shape (issue 12, section 3).

An endpoint that echoes the API key (in a 401 or 500 body, or inside a completion) must not get
it into a quarantine detail, a release file, the LLM cache, a log record or the console, whatever
the key looks like: ``sk-...`` (caught by shape too), 32 hex characters or a JWT-like token (only
caught by value: :mod:`geodelta.secrets` registers the value the annotator read from its
environment variable). Plus the registry itself: short values ignored, overlapping secrets,
secrets inside URLs and JSON, log records, SAS tokens.
"""

from __future__ import annotations

import json
import logging
import tarfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from geodelta import secrets
from geodelta.annotators.errors import AnnotationFailed
from geodelta.annotators.llm import LLMAnnotator
from geodelta.pipelines.cli import app
from geodelta.schemas import Annotation, QuarantineRecord
from geodelta.schemas.config import OpenAIConfig
from geodelta.sources.signing import PlanetaryComputerSigner, SasToken
from tests.openai_double import OpenAIDouble
from tests.test_template import random_facts

KEY_ENV = "GEODELTA_TEST_ECHOED_KEY"

#: Three shapes of API keys. Only the first one is caught by the shape-based net alone.
KEYS = {
    "sk": "sk-proj-Zq81bXe0aLmN4TfQ7uW2-vYc",
    "hex32": "9f86d081884c7d659a2feaa0c55ad015",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJnZW9kZWx0YS10ZXN0In0.Xk1dQ2v9nBf0aL3mR7tY8wE4",
}


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no secret registered; the process's registry comes back after."""
    monkeypatch.setattr(secrets, "_values", ())
    yield


# --- the registry -------------------------------------------------------------------------------


def test_short_values_are_ignored_and_long_ones_redacted_wherever_they_are() -> None:
    assert not secrets.register_secret("abc1234")  # 7 characters: would redact ordinary text
    assert not secrets.register_secret(None) and not secrets.register_secret("   ")
    assert secrets.redact_values("abc1234 stays") == "abc1234 stays"
    key = KEYS["hex32"]
    assert secrets.register_secret(key)
    assert secrets.redact_values(f"a {key} b {key}") == "a <redacted> b <redacted>"
    assert secrets.redact(f"x{key}y") == "x<redacted>y"  # inside a word, too
    assert secrets.redact_values("nothing secret here") == "nothing secret here"


def test_secrets_inside_urls_and_json_are_redacted() -> None:
    key = 'k/ey+with"odd&chars=1'  # changes under URL encoding and JSON escaping
    secrets.register_secret(key)
    url = f"https://api.example.com/v1?api_key={quote(key, safe='')}&model=m"
    assert key not in secrets.redact_values(url)
    assert quote(key, safe="") not in secrets.redact_values(url)
    assert secrets.redact_values(url).startswith("https://api.example.com/v1?api_key=<redacted>")
    body = json.dumps({"error": {"message": f"bad key {key}", "headers": {"api-key": key}}})
    clean = secrets.redact_values(body)
    assert json.dumps(key)[1:-1] not in clean and key not in clean
    assert json.loads(clean) == {
        "error": {"message": "bad key <redacted>", "headers": {"api-key": "<redacted>"}}
    }


def test_overlapping_secrets_leave_no_piece_of_either() -> None:
    a, b = "AAAA1111BBBB2222", "BBBB2222CCCC3333"  # share "BBBB2222"
    secrets.register_secret(a)
    secrets.register_secret(b)
    assert secrets.redact_values(f"[{a}CCCC3333]") == "[<redacted>]"
    assert secrets.redact_values(f"{a} and {b}") == "<redacted> and <redacted>"
    # one secret inside another: the longer one goes whole
    secrets.register_secret("BBBB2222CC")
    assert secrets.redact_values(f"={b}=") == "=<redacted>="


def test_redaction_is_idempotent_and_keeps_the_shape_net() -> None:
    secrets.register_secret(KEYS["hex32"])
    texts = [
        f"Authorization: Bearer {KEYS['hex32']}",
        "GET https://a.blob.core.windows.net/c/x.tif?sv=2021&sig=abc%2B failed",
        "{'api-key': 'abcdefgh1234'}",
        f"token {KEYS['jwt']} leaked",
        f"key {KEYS['sk']} leaked",
        "plain text: nothing to hide (pairing.min_valid_fraction=0.6)",
    ]
    for text in texts:
        once = secrets.redact(text)
        assert secrets.redact(once) == once, text
    assert secrets.redact(texts[0]) == "Authorization: Bearer <redacted>"
    assert secrets.redact(texts[1]).endswith("x.tif?<redacted> failed")
    assert secrets.redact(texts[2]) == "{'api-key': '<redacted>'}"
    assert KEYS["jwt"] not in secrets.redact(texts[3]) and "sk-proj" not in secrets.redact(texts[4])
    assert secrets.redact(texts[5]) == texts[5]


def test_log_records_and_exceptions_are_redacted_by_value(caplog: pytest.LogCaptureFixture) -> None:
    key = KEYS["hex32"]
    secrets.register_secret(key)  # installs the log-record factory
    log = logging.getLogger("some.library")
    with caplog.at_level(logging.DEBUG):
        log.debug("sending key %s", key)
        try:
            raise RuntimeError(f"401 for {key}")
        except RuntimeError:
            log.exception("request failed")
    assert caplog.records and key not in caplog.text
    assert "sending key <redacted>" in caplog.text
    assert "RuntimeError: 401 for <redacted>" in caplog.text
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "k=%s", (key,), None)
    assert secrets.RedactingFilter().filter(record) and record.getMessage() == "k=<redacted>"


def test_quarantine_details_carry_no_registered_secret() -> None:
    key = KEYS["hex32"]
    detail = f"http://llm/v1 answered 401: {{'message': 'invalid key {key}'}}"
    assert (
        key
        in QuarantineRecord(
            key="k", cell_id="c", stage="annotate", reason="r", detail=detail
        ).detail
    )
    secrets.register_secret(key)
    q = QuarantineRecord(key="k", cell_id="c", stage="annotate", reason="r", detail=detail)
    assert key not in q.detail and "invalid key <redacted>" in q.detail
    assert key not in q.model_dump_json()
    assert key not in str(AnnotationFailed("k", "llm_request_rejected", detail))


def test_sas_tokens_a_signer_receives_are_secrets_by_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sig = "c2lnbmF0dXJlLXZhbHVl%2Bx"
    token = f"sv=2024-05-04&se=2099-01-01T00%3A00%3A00Z&sp=r&sr=c&sig={sig}"
    signer = PlanetaryComputerSigner(
        lambda account, container: SasToken(token, datetime(2099, 1, 1, tzinfo=UTC)),
        hosts=(".blob.core.windows.net",),
    )
    signer("https://acct.blob.core.windows.net/c/x.tif")
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("gdal").warning("read failed, token was %s", sig)
    assert sig not in caplog.text and "token was <redacted>" in caplog.text
    assert secrets.redact_values(f"sig {sig} / decoded c2lnbmF0dXJlLXZhbHVl+x") == (
        "sig <redacted> / decoded <redacted>"
    )
    # the dates and letters of the token are not secrets: ordinary text keeps them
    assert secrets.redact_values("built on 2024-05-04") == "built on 2024-05-04"


# --- the LLM annotator against an endpoint that echoes the key ----------------------------------


def _settings(d: OpenAIDouble, **kw: Any) -> OpenAIConfig:
    return OpenAIConfig(
        base_url=d.base_url,
        api_key_env=KEY_ENV,
        model="gpt-4o-mini",
        timeout_s=2.0,
        max_backoff_s=0.05,
        **kw,
    )


def _files_text(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` as bytes; tar members and parquet rows one by one, too."""
    out: dict[str, bytes] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        out[str(path)] = path.read_bytes()
        if path.suffix == ".parquet":  # compressed pages would hide a key from a byte search
            rows = pq.read_table(path).to_pylist()
            out[f"{path}:rows"] = json.dumps(rows, default=str).encode()
        if path.suffix == ".tar":
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    f = tar.extractfile(member)
                    out[f"{path}:{member.name}"] = f.read() if f is not None else b""
    return out


def _leaks(key: str, blobs: dict[str, bytes]) -> list[str]:
    forms = {key, json.dumps(key)[1:-1], quote(key, safe="")}
    return [name for name, data in blobs.items() if any(f.encode() in data for f in forms)]


@pytest.mark.integration
@pytest.mark.parametrize("shape", sorted(KEYS))
def test_an_echoed_key_reaches_no_detail_cache_or_log(
    shape: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key = KEYS[shape]
    monkeypatch.setenv(KEY_ENV, key)
    rng = np.random.default_rng(1)
    batch = [(f"cell{i}_20200101_20210101", random_facts(rng, binary=False)) for i in range(4)]
    faults = ["401", "500", "echo", None]
    with OpenAIDouble(api_key=key, echo_key=True) as d:
        d.rule = lambda k: faults[int(k[4])]
        with (
            caplog.at_level(logging.DEBUG),
            LLMAnnotator(_settings(d, max_retries=1), cache_dir=tmp_path / "cache") as a,
        ):
            out = a.annotate_batch(batch)
        served = dict(d.faults_served)
    assert served == {"401": 1, "500": 2, "echo": 1}, served  # the double did echo the key
    rejected, unavailable, echoed, fine = out
    assert isinstance(rejected, AnnotationFailed) and rejected.reason == "llm_request_rejected"
    assert "answered 401" in rejected.detail and "<redacted>" in rejected.detail
    assert isinstance(unavailable, AnnotationFailed) and unavailable.reason == "llm_unavailable"
    assert "<redacted>" in unavailable.detail
    assert isinstance(echoed, Annotation) and "(answered for key <redacted>)" in echoed.captions[0]
    assert isinstance(fine, Annotation)
    texts = {
        "details": f"{rejected} {rejected.detail} {unavailable} {unavailable.detail}".encode(),
        "annotation": echoed.model_dump_json().encode(),
        "logs": caplog.text.encode(),
        **_files_text(tmp_path / "cache"),
    }
    assert any("cache" in name for name in texts)  # the cache was written: its check is real
    assert _leaks(key, texts) == []


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("shape", sorted(KEYS))
def test_a_demo_build_against_an_echoing_endpoint_leaks_the_key_nowhere(
    shape: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The whole command, Beam worker processes included: release, cache, logs, console."""
    key = KEYS[shape]
    monkeypatch.setenv(KEY_ENV, key)
    with OpenAIDouble(api_key=key, echo_key=True) as d:
        # in the order samples arrive: one 401, one 500 (every retry), one echo, one fine, ...
        assigned: dict[str, str | None] = {}

        def rule(k: str) -> str | None:
            with lock:
                return assigned.setdefault(k, ("401", "500", "echo", None)[len(assigned) % 4])

        lock = threading.Lock()
        d.rule = rule
        with caplog.at_level(logging.DEBUG):
            res = CliRunner().invoke(
                app,
                [
                    "demo",
                    "--out",
                    str(tmp_path),
                    "--scale",
                    "0.5",
                    "--no-progress",
                    "--no-reference",
                    "--annotator",
                    "openai",
                    "--base-url",
                    d.base_url,
                    "--model",
                    "gpt-4o-mini",
                    "--api-key-env",
                    KEY_ENV,
                ],
            )
        served = dict(d.faults_served)
    assert res.exit_code in (0, 1), res.output
    assert {"401", "500", "echo"} <= set(served), served  # every echo path was taken
    release = tmp_path / "release"
    blobs = _files_text(tmp_path)  # the release, the LLM cache, the demo catalog
    assert (release / "quarantine.parquet").exists() and any("llm-cache" in n for n in blobs)
    reasons = blobs[f"{release / 'quarantine.parquet'}:rows"]
    assert b"llm_request_rejected" in reasons and b"<redacted>" in reasons
    blobs["console"] = (res.output + (res.stderr if res.stderr_bytes is not None else "")).encode()
    blobs["logs"] = caplog.text.encode()
    assert _leaks(key, blobs) == []
