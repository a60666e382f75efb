"""Planetary Computer signing: token cache and refresh before expiry, 429s from the token
endpoint, redaction of secrets in text and logs. Offline: fake fetchers and a local test double."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from geodelta.schemas import parse_config
from geodelta.sources.signing import (
    PlanetaryComputerSigner,
    RedactingFilter,
    SasToken,
    SigningError,
    http_token_fetcher,
    install_log_redaction,
    redact_secrets,
    signer_for,
)
from tests.conftest import minimal_config
from tests.http_doubles import Fault, FileServer

BLOB = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/10/S/EG/2021/B04.tif"


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeFetcher:
    """Hands out numbered tokens valid ``ttl_s`` from the clock's now."""

    def __init__(self, clock: FakeClock, ttl_s: float = 45 * 60) -> None:
        self.clock = clock
        self.ttl_s = ttl_s
        self.calls: list[tuple[str, str]] = []

    def __call__(self, account: str, container: str) -> SasToken:
        self.calls.append((account, container))
        expiry = datetime.fromtimestamp(self.clock.t + self.ttl_s, tz=UTC)
        return SasToken(token=f"sv=2021&se=x&sig=TOKEN{len(self.calls)}", expiry=expiry)


def test_signs_blob_hrefs_and_leaves_others_alone() -> None:
    clock = FakeClock(1_700_000_000.0)
    fetch = FakeFetcher(clock)
    sign = PlanetaryComputerSigner(fetch, clock=clock)
    assert sign(BLOB) == f"{BLOB}?sv=2021&se=x&sig=TOKEN1"
    assert fetch.calls == [("sentinel2l2a01", "sentinel2-l2")]  # account, container
    assert sign("/data/B04.tif") == "/data/B04.tif"
    assert sign("https://example.com/B04.tif") == "https://example.com/B04.tif"
    assert sign(f"{BLOB}?foo=1").endswith("?foo=1&sv=2021&se=x&sig=TOKEN1")  # cached token
    assert len(fetch.calls) == 1


def test_tokens_are_cached_per_container_and_refreshed_before_expiry() -> None:
    clock = FakeClock(1_700_000_000.0)
    fetch = FakeFetcher(clock, ttl_s=45 * 60)
    sign = PlanetaryComputerSigner(fetch, refresh_margin_s=300, clock=clock)
    other = BLOB.replace("sentinel2-l2", "landsat-c2")
    assert sign(BLOB).endswith("TOKEN1")
    assert sign(other).endswith("TOKEN2")  # another container: its own token
    clock.t += 39 * 60  # 6 minutes left: still good
    assert sign(BLOB).endswith("TOKEN1") and len(fetch.calls) == 2
    clock.t += 90  # 4.5 minutes left (< 5): refreshed BEFORE it expires
    assert sign(BLOB).endswith("TOKEN3")
    assert fetch.calls[-1] == ("sentinel2l2a01", "sentinel2-l2")
    # a long build: one fetch per container per ~40 minutes, never a read with an expired token
    for _ in range(20):
        clock.t += 10 * 60
        url = sign(BLOB)
        token_no = int(url.rsplit("TOKEN", 1)[1])
        expiry = sign.token("sentinel2l2a01", "sentinel2-l2").expiry.timestamp()
        assert expiry - clock.t >= 300, token_no


def test_an_already_expired_token_is_an_error() -> None:
    clock = FakeClock(1_700_000_000.0)
    sign = PlanetaryComputerSigner(FakeFetcher(clock, ttl_s=-1), clock=clock)
    with pytest.raises(SigningError, match="expired token"):
        sign(BLOB)


def test_token_endpoint_429_is_retried_with_retry_after(tmp_path: Path) -> None:
    server = FileServer(tmp_path, token="sv=2024&sig=SERVERTOKEN", token_ttl_s=3600)
    with server.running():
        server.faults.append(Fault(429, {"Retry-After": "1"}))
        fetch = http_token_fetcher(f"{server.origin}/sas", retries=3, backoff_s=0.0)
        token = fetch("acct", "cont")
        seen = [r for r in server.seen if r.path == "/sas/acct/cont"]
    assert token.token == "sv=2024&sig=SERVERTOKEN"
    assert 3500 < (token.expiry - datetime.now(UTC)).total_seconds() <= 3600
    assert len(seen) == 2 and 0.95 <= seen[1].t - seen[0].t < 2.5
    assert "SERVERTOKEN" not in repr(token)


def test_token_endpoint_failure_is_typed_and_bounded(tmp_path: Path) -> None:
    server = FileServer(tmp_path, token="sig=NEVER")
    with server.running():
        server.faults.extend([Fault(503)] * 5)
        fetch = http_token_fetcher(f"{server.origin}/sas", retries=1, backoff_s=0.0)
        with pytest.raises(SigningError) as err:
            fetch("acct", "cont")
        assert len(server.seen) == 2
    assert err.value.status == 503 and err.value.url.endswith("/sas/acct/cont")


def test_signer_for_config() -> None:
    static = parse_config(minimal_config())
    assert signer_for(static.catalog) is None
    pc = parse_config(
        minimal_config(
            catalog={
                "kind": "planetary-computer",
                "url": "https://planetarycomputer.microsoft.com/api/stac/v1",
                "sas_url": "http://127.0.0.1:9/sas",
                "token_refresh_s": 600,
            }
        )
    )
    signer = signer_for(pc.catalog)
    assert isinstance(signer, PlanetaryComputerSigner) and signer.refresh_margin_s == 600
    assert signer("/local/B04.tif") == "/local/B04.tif"  # no token needed, nothing fetched
    none = parse_config(minimal_config(catalog={**pc.catalog.model_dump(), "signing": "none"}))
    assert signer_for(none.catalog) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "open /vsicurl/https://a.blob.core.windows.net/c/x.tif?sv=2021&sig=abc%2B failed",
            "open /vsicurl/https://a.blob.core.windows.net/c/x.tif?<redacted> failed",
        ),
        ("'https://h/x.tif?se=1&sig=zz'", "'https://h/x.tif?<redacted>'"),
        (
            "token sv=2021-06&sp=r&sig=SECRET alone",
            "token sv=<redacted>&sp=<redacted>&sig=<redacted> alone",
        ),
        ("{'Ocp-Apim-Subscription-Key': 'k123'}", "{'Ocp-Apim-Subscription-Key': '<redacted>'}"),
        ("/data/x.tif: not found", "/data/x.tif: not found"),
    ],
)
def test_redact_secrets(text: str, expected: str) -> None:
    assert redact_secrets(text) == expected


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    install_log_redaction()  # idempotent
    log = logging.getLogger("rasterio._io")  # any library logger
    with caplog.at_level(logging.DEBUG):
        log.debug("opened %s", "https://a.blob.core.windows.net/c/x.tif?sv=1&sig=SECRET")
        try:
            raise RuntimeError("HTTP 403 on https://h/x.tif?sig=SECRET")
        except RuntimeError:
            log.exception("read failed")
    assert "SECRET" not in caplog.text
    assert "x.tif?<redacted>" in caplog.text
    record = logging.LogRecord("x", logging.INFO, "f", 1, "url %s", ("https://h/a?sig=S",), None)
    assert RedactingFilter().filter(record) and record.getMessage() == "url https://h/a?<redacted>"
