"""A TEST DOUBLE of Amazon S3 for the object-store and cluster tests: moto's server mode.

moto (``moto_server``) is a stand-in for S3, not S3: it speaks the S3 REST API well enough for
s3fs, botocore and boto3 (s3fs's own test suite runs against it), keeps every object in the
memory of its process, and accepts any credentials. What passes here shows that geodelta talks
to an S3-compatible endpoint correctly; it says nothing about S3's latency, consistency under
load, or IAM.

The server runs as a child process (``moto_server -H 127.0.0.1 -p PORT``, or
``python -m moto.server`` when the script is missing), bound to 127.0.0.1 on a free port, so
processes the tests start (``geodelta`` CLI, Dask workers, Airflow) reach it too. It is ready
when ``GET /moto-api/`` answers; it is killed at the end of the session.

Fixtures (registered in ``tests/conftest.py``):

* ``s3_server`` (session): the running server, a :class:`S3TestServer`.
* ``s3_bucket`` (function): a fresh, empty bucket on it, with this process's environment pointed
  at the server for the test (the ``AWS_*`` variables of :meth:`S3TestServer.env`, s3fs's cached
  filesystems dropped before and after), a :class:`S3Bucket`.

A subprocess needs :meth:`S3TestServer.env` in its environment: fake credentials
(``testing``), a region, and ``AWS_ENDPOINT_URL``, which botocore (hence aiobotocore and s3fs)
reads for every client it creates. :meth:`S3TestServer.storage_options` gives the same as
fsspec storage options, for code that passes them explicitly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.prerequisites import missing

#: Credentials moto accepts (any would do); never real ones.
FAKE_KEY = "testing"
FAKE_SECRET = "testing"
REGION = "us-east-1"
#: Seconds the server gets to answer after it starts.
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script), "-H", "127.0.0.1", "-p", str(port)]
    found = shutil.which("moto_server")
    if found:
        return [found, "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass(frozen=True)
class S3TestServer:
    """A running moto server (a test double of S3) on 127.0.0.1.

    Attributes:
        endpoint: its URL, ``http://127.0.0.1:PORT``.
        log: the file its stdout/stderr go to (read it when a test fails oddly).
    """

    endpoint: str
    log: Path

    def env(self) -> dict[str, str]:
        """The environment a process (this one or a child) needs to reach the server with
        s3fs/botocore: fake credentials, a region, ``AWS_ENDPOINT_URL``; the EC2 metadata
        service is not asked (no credential lookup leaves the machine)."""
        return {
            "AWS_ACCESS_KEY_ID": FAKE_KEY,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def storage_options(self) -> dict[str, Any]:
        """The same as fsspec/s3fs storage options (``fsspec.filesystem("s3", **these)``)."""
        return {
            "key": FAKE_KEY,
            "secret": FAKE_SECRET,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": REGION},
        }

    def client(self) -> Any:
        """A boto3 S3 client on the server (boto3 comes with moto)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=FAKE_KEY,
            aws_secret_access_key=FAKE_SECRET,
            region_name=REGION,
        )

    def new_bucket(self, prefix: str = "geodelta") -> str:
        """Create a fresh, empty bucket with a unique name and return the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@dataclass(frozen=True)
class S3Bucket:
    """A fresh bucket on the test double, for one test.

    Attributes:
        server: the server it lives on.
        name: the bucket's name.
    """

    server: S3TestServer
    name: str

    @property
    def url(self) -> str:
        """``s3://NAME``."""
        return f"s3://{self.name}"

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under ``prefix``, sorted."""
        client = self.server.client()
        out: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix
        ):
            out.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(out)


@contextlib.contextmanager
def run_s3_server(log_dir: Path) -> Iterator[S3TestServer]:
    """Start moto's server (a test double of S3) on a free port of 127.0.0.1, wait until it
    answers, yield it, and kill it on the way out (also when the body raises).

    Raises:
        RuntimeError: the server did not answer within :data:`START_TIMEOUT_S` (the message
            holds the tail of its log).
    """
    log = log_dir / "moto_server.log"
    for _attempt in range(3):  # a free port may be taken between the probe and the bind
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log.open("ab") as out:
            proc = subprocess.Popen(
                _server_command(port),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and proc.poll() is None:
                if _answers(endpoint):
                    break
                time.sleep(0.1)
            if proc.poll() is not None or not _answers(endpoint):
                continue
            yield S3TestServer(endpoint=endpoint, log=log)
            return
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise RuntimeError(f"moto_server (S3 test double) did not start; log tail:\n{tail}")


def _drop_s3fs_cache() -> None:
    """Forget s3fs filesystems cached with another endpoint or credentials."""
    with contextlib.suppress(ImportError):
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3TestServer]:
    """moto's server mode (a TEST DOUBLE of S3) on 127.0.0.1 for the whole session; skipped
    when moto or s3fs is not installed (``pip install 'moto[server]' s3fs``), except in CI."""
    try:
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError as exc:
        missing(f"moto[server] or s3fs not installed ({exc}): `make install`")
    with run_s3_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3TestServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A fresh bucket on :func:`s3_server`, with this process's ``AWS_*`` environment pointed
    at the server for the duration of the test (child processes inherit it)."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    _drop_s3fs_cache()
    try:
        yield S3Bucket(server=s3_server, name=s3_server.new_bucket())
    finally:
        _drop_s3fs_cache()
