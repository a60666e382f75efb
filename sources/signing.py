"""Signing asset hrefs at read time (Planetary Computer SAS tokens), and keeping them secret.

Scene records keep *stripped* hrefs (:func:`geodelta.schemas.strip_secret`): a signed query
string is a secret that must never reach a shard, a manifest, a parquet row, a log line or a
report. Signing happens only when a raster is opened (:mod:`geodelta.sources.raster` calls
the signer of its :class:`~geodelta.sources.raster.RasterAccess`), and the signed URL lives only
in GDAL's open dataset.

* :class:`PlanetaryComputerSigner` appends a SAS token per storage account/container. Tokens
  come from the Planetary Computer token endpoint (the ``planetary-computer`` package's
  settings and token model), are cached, and are refreshed *before* they expire (tokens last
  about 45 minutes; by default one with less than 5 minutes left is replaced), so a long build
  never reads with an expired token. The token endpoint's 429/5xx answers are retried with
  backoff, honouring ``Retry-After`` (bounded).
* Every token fetched and the subscription key are registered as secrets by value
  (:mod:`geodelta.secrets`) in the process that receives them; :func:`redact_secrets`
  (:func:`geodelta.secrets.redact`) removes them, and query strings, known secret parameters
  and API-key headers by shape, from any text (error messages become quarantine details);
  :func:`install_log_redaction` applies it to every log record made in the process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from geodelta import secrets as _secrets
from geodelta._optional import optional_import
from geodelta.errors import SourceError

if TYPE_CHECKING:
    import requests

    from geodelta.schemas.config import CatalogConfig

HrefSigner = Callable[[str], str]

logger = logging.getLogger(__name__)


class SigningError(SourceError):
    """A SAS token could not be obtained; names the token URL (never a token) and what to do.

    A :class:`~geodelta.errors.SourceError`, hence still a ``RuntimeError``.
    """

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"cannot get a SAS token from {url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class SasToken:
    """A SAS token (a query string without the '?') and when it expires (UTC)."""

    token: str
    expiry: datetime

    def ttl(self, now: float) -> float:
        """Seconds left at unix time ``now``."""
        return self.expiry.timestamp() - now

    def __repr__(self) -> str:  # never print the token itself
        return f"SasToken(token=<redacted>, expiry={self.expiry.isoformat()})"


#: (account, container) -> token; fetches a fresh token.
TokenFetcher = Callable[[str, str], SasToken]


# --------------------------------------------------------------------------------------------
# redaction

REDACTED = _secrets.REDACTED
#: Removes registered secrets (by value) and URL query strings, SAS/signature parameters and
#: API-key headers (by shape) from any text: :func:`geodelta.secrets.redact`.
redact_secrets = _secrets.redact
RedactingFilter = _secrets.RedactingFilter
install_log_redaction = _secrets.install_log_redaction


# --------------------------------------------------------------------------------------------
# HTTP retries shared with the STAC API client


def make_retry(
    *, retries: int, backoff_s: float, max_wait_s: float, allowed_methods: frozenset[str]
) -> Any:
    """A bounded urllib3 ``Retry``: 429/5xx and timeouts, exponential backoff with jitter,
    ``Retry-After`` honoured but capped at ``max_wait_s``.

    The last response is returned (``raise_on_status=False``) once retries run out, so callers
    see its HTTP status.
    """
    from urllib3.util.retry import Retry

    class _CappedRetry(Retry):
        cap_s = max_wait_s

        def get_retry_after(self, response: Any) -> float | None:
            value = super().get_retry_after(response)
            return None if value is None else min(value, self.cap_s)

    return _CappedRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        backoff_factor=backoff_s,
        backoff_max=max_wait_s,
        backoff_jitter=min(backoff_s, 1.0),
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=allowed_methods,
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def _session(retry: Any, *, pool: int = 10) -> requests.Session:
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=pool)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# --------------------------------------------------------------------------------------------
# Planetary Computer


def _planetary_computer() -> Any:
    """Import the ``planetary-computer`` package (the ``stac`` extra) with its ``sas`` and
    ``settings`` modules.

    planetary-computer 1.0 declares a pydantic model with a class-based ``Config``; pydantic 2
    warns about it (PydanticDeprecatedSince20) once, at import. That warning is about the
    package's code, not ours, so it is silenced for this import only.

    Raises:
        MissingDependencyError: the package is not installed; the message names the extra.
    """
    import warnings

    purpose = "Planetary Computer signing"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Support for class-based `config` is deprecated")
        pc = optional_import("planetary_computer", "stac", purpose=purpose)
        optional_import("planetary_computer.sas", "stac", purpose=purpose)
        optional_import("planetary_computer.settings", "stac", purpose=purpose)
    return pc


def default_sas_url() -> str:
    """The token endpoint of the ``planetary-computer`` package (env ``PC_SDK_SAS_URL``)."""
    pc = _planetary_computer()
    return str(pc.settings.Settings.get().sas_url)


def http_token_fetcher(
    sas_url: str | None,
    *,
    retries: int = 5,
    backoff_s: float = 0.5,
    max_wait_s: float = 30.0,
    timeout_s: float = 30.0,
) -> TokenFetcher:
    """A fetcher of SAS tokens from ``{sas_url}/{account}/{container}`` (``sas_url`` None: the
    ``planetary-computer`` package's endpoint, :func:`default_sas_url`).

    The subscription key (if any) is read from the ``planetary-computer`` package's settings
    (env ``PC_SDK_SUBSCRIPTION_KEY`` or ``~/.planetarycomputer/settings.env``) and sent as a
    header; it is never stored in the config. 429/5xx answers are retried (``Retry-After``
    honoured, capped at ``max_wait_s``).

    Nothing is imported or opened until the first token is fetched: a build whose hrefs are
    never signed (a snapshot of a static catalog) never loads ``planetary_computer`` (~0.2 s)
    or ``requests``.
    """
    lock = threading.Lock()
    state: dict[str, Any] = {}

    def setup() -> dict[str, Any]:
        with lock:
            if not state:
                pc = _planetary_computer()
                retry = make_retry(
                    retries=retries,
                    backoff_s=backoff_s,
                    max_wait_s=max_wait_s,
                    allowed_methods=frozenset({"GET"}),
                )
                state["pc"] = pc
                state["session"] = _session(retry)
                state["base"] = (sas_url or str(pc.settings.Settings.get().sas_url)).rstrip("/")
            return state

    def fetch(account: str, container: str) -> SasToken:
        import requests

        st = setup()
        SASToken, Settings = st["pc"].sas.SASToken, st["pc"].settings.Settings
        url = f"{st['base']}/{account}/{container}"
        key = Settings.get().subscription_key
        _secrets.register_secret(key)
        headers = {"Ocp-Apim-Subscription-Key": key} if key else None
        try:
            response = st["session"].get(url, headers=headers, timeout=timeout_s)
        except requests.RequestException as exc:
            raise SigningError(
                url,
                f"{type(exc).__name__} after {retries} retries ({redact_secrets(str(exc))}); "
                "check the network, catalog.sas_url, or raise catalog.retries",
            ) from None
        if response.status_code != 200:
            hint = (
                "set PC_SDK_SUBSCRIPTION_KEY"
                if response.status_code in (401, 403)
                else "retry later or raise catalog.retries"
            )
            raise SigningError(
                url,
                f"HTTP {response.status_code} ({redact_secrets(response.text[:200])}); {hint}",
                status=response.status_code,
            )
        parsed = SASToken.model_validate(response.json())
        expiry = parsed.expiry if parsed.expiry.tzinfo else parsed.expiry.replace(tzinfo=UTC)
        _secrets.register_sas_token(parsed.token)
        return SasToken(token=parsed.token, expiry=expiry)

    return fetch


def _account_container(href: str) -> tuple[str, str]:
    """(storage account, container) of a blob URL; (host, first path segment) otherwise."""
    parts = urlsplit(href)
    host = parts.netloc
    segment = parts.path.lstrip("/").split("/", 1)[0]
    if host.endswith(".blob.core.windows.net"):
        return host.split(".", 1)[0], segment
    return host, segment


class PlanetaryComputerSigner:
    """Signs hrefs of the configured hosts with cached, refreshed-before-expiry SAS tokens.

    Thread-safe; one instance per worker process. Local paths and other hosts pass through.

    Args:
        fetch: fetches a fresh token for (account, container); default: the Planetary Computer
            token endpoint (:func:`http_token_fetcher`).
        hosts: host names, or suffixes starting with '.', whose hrefs are signed.
        refresh_margin_s: a cached token with less than this left is replaced before use.
        clock: unix time source (tests pass a fake one).
    """

    def __init__(
        self,
        fetch: TokenFetcher | None = None,
        *,
        hosts: tuple[str, ...] = (".blob.core.windows.net",),
        refresh_margin_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch or http_token_fetcher(None)
        self.hosts = tuple(hosts)
        self.refresh_margin_s = refresh_margin_s
        self._clock = clock
        self._tokens: dict[tuple[str, str], SasToken] = {}
        self._lock = threading.Lock()
        self.fetches = 0
        install_log_redaction()

    def _signs(self, host: str) -> bool:
        name = host.split(":", 1)[0]
        return any(
            (h.startswith(".") and name.endswith(h)) or name == h or host == h for h in self.hosts
        )

    def token(self, account: str, container: str) -> SasToken:
        """The cached token of (account, container), fetched anew when it is about to expire."""
        key = (account, container)
        with self._lock:
            token = self._tokens.get(key)
            if token is None or token.ttl(self._clock()) < self.refresh_margin_s:
                token = self._fetch(account, container)
                _secrets.register_sas_token(token.token)  # whatever fetcher made it
                self.fetches += 1
                if token.ttl(self._clock()) <= 0:
                    raise SigningError(
                        f"{account}/{container}",
                        f"the token endpoint returned an expired token (expiry {token.expiry})",
                    )
                self._tokens[key] = token
                logger.debug("SAS token for %s/%s valid until %s", account, container, token.expiry)
            return token

    def __call__(self, href: str) -> str:
        """The signed href (a secret: use it to open the file, never store or log it)."""
        parts = urlsplit(href)
        if parts.scheme not in ("http", "https") or not self._signs(parts.netloc):
            return href
        token = self.token(*_account_container(href))
        return f"{href}{'&' if parts.query else '?'}{token.token}"


def signer_for(cfg: CatalogConfig) -> HrefSigner | None:
    """The signer a catalog config asks for, or None (hrefs are read as they are).

    ``catalog.signing: auto`` signs for ``kind: planetary-computer``, and for ``kind:
    snapshot`` (items of any catalog, frozen) the hrefs on ``catalog.sign_hosts`` (the
    Planetary Computer's blob storage; others are read as they are); no other kind.
    """
    mode = cfg.signing
    if mode == "auto":
        signs = cfg.kind in ("planetary-computer", "snapshot")
        mode = "planetary-computer" if signs else "none"
    if mode == "none":
        return None
    fetch = http_token_fetcher(
        cfg.sas_url,
        retries=cfg.retries,
        backoff_s=cfg.backoff_s,
        max_wait_s=cfg.max_wait_s,
        timeout_s=cfg.timeout_s,
    )
    return PlanetaryComputerSigner(
        fetch, hosts=cfg.sign_hosts, refresh_margin_s=cfg.token_refresh_s
    )
