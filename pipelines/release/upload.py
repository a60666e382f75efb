"""Releases at any fsspec URL: assembled locally, then uploaded so readers never see half of one.

``output.dir`` may be a URL (``file:///data/release``, ``memory://bucket/release``, and
``s3://``, ``gs://``, ``az://``... with the matching fsspec package installed). The build runs as
for a local folder, in a local work folder (``output.work_dir``; default
``.geodelta-work/<name>-<version>-<hash of the URL>`` next to the config), then
:func:`upload_release` uploads it. ``manifest.json`` marks a complete release, as it does
locally, so it is always written last:

- where the filesystem renames folders atomically (``file://``), every file goes to a
  temporary sibling ``.<name>.partial``, ``manifest.json`` last, and the folder is renamed onto
  the target (an existing target is first renamed aside to ``.<name>.old``, removed after);
- elsewhere (object stores have no folder rename; ``memory://`` is treated the same), the
  files are written in place: an existing ``manifest.json`` is deleted FIRST (from then on the
  target reads as incomplete, never as a mix of two releases), then a stamp
  ``.geodelta-upload.json`` naming the config hash, every file, the removal of files the new
  release does not have, ``manifest.json``, and the stamp is removed.

A failed upload leaves no ``manifest.json`` at the target and keeps the local work folder
(its staging area included), so ``--resume`` finishes it without re-running any cell. The
rules for an existing target are those of a local folder: a fresh build refuses a non-empty
one, ``--resume`` continues the same config only, ``--overwrite`` replaces it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

from geodelta.errors import BuildError, ReleaseError
from geodelta.pipelines.release.layout import (
    MANIFEST,
    MANIFEST_SHA256,
    STAGING,
    UPLOAD_STAMP,
    Mode,
    read_manifest,
)
from geodelta.schemas import BuildConfig, strip_secret

if TYPE_CHECKING:
    from geodelta.pipelines.release.verify import VerifyResult

#: Default parent of the local work folders, next to the config.
WORK_ROOT = ".geodelta-work"


class OutputError(BuildError):
    """A release URL that cannot be written (or read); names the URL and what to do.

    A :class:`~geodelta.errors.BuildError` (so a ``RuntimeError``).
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


def is_url(dest: str) -> bool:
    """Whether an ``output.dir`` is a URL (``scheme://...``) rather than a local path."""
    return "://" in dest


def shown(url: str) -> str:
    """``url`` for messages and logs: no query string (SAS tokens) and no user info."""
    parts = urlsplit(strip_secret(url))
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


@dataclass(frozen=True)
class Target:
    """A release location: the fsspec filesystem and the path on it."""

    url: str
    fs: Any
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """Open the filesystem of ``url``.

        Raises:
            OutputError: no fsspec implementation for the scheme (names the package to install).
        """
        try:
            fs, path = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise OutputError(
                f"cannot open output.dir {shown(url)!r}: {exc} (s3:// needs s3fs, gs:// gcsfs, "
                "az:// adlfs)",
                url=shown(url),
            ) from None
        return cls(url=shown(url), fs=fs, path=str(path).rstrip("/"))

    @property
    def renames(self) -> bool:
        """Whether a whole folder can be renamed onto the target atomically (local disks)."""
        return isinstance(self.fs, LocalFileSystem)

    def join(self, rel: str) -> str:
        """The filesystem path of ``rel`` inside the release."""
        return f"{self.path}/{rel}"

    def listing(self) -> list[str]:
        """Relative paths of the files under the target (empty when it does not exist)."""
        if not self.fs.exists(self.path):
            return []
        prefix = self.path + "/"
        found = self.fs.find(self.path)
        return sorted(p[len(prefix) :] for p in found if p.startswith(prefix))

    def read_json(self, rel: str) -> Any:
        """A JSON file of the release, or None when it is missing or not JSON."""
        try:
            return json.loads(self.fs.cat_file(self.join(rel)))
        except (FileNotFoundError, ValueError):
            return None


#: fsspec protocols whose first path component is a bucket (container) that must exist.
_BUCKETED = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"})
#: For the reachability probe of an S3 endpoint: one retry and short timeouts, so a wrong
#: endpoint is refused in about a second, not after botocore's and s3fs's retries (~10 s).
_S3_PROBE: dict[str, Any] = {
    "config_kwargs": {"retries": {"max_attempts": 2}, "connect_timeout": 5, "read_timeout": 10}
}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def check_reachable(url: str, what: str = "output.dir") -> None:
    """Refuse, before any work, an object store that does not answer or lacks the bucket.

    For a bucketed store (``s3://``, ``gs://``, ``az://``...) the bucket (container) is looked up
    (one request: S3 HeadBucket); other URLs (``memory://``, ``file://``) only need their
    fsspec implementation. Credentials and the endpoint come from the environment (for S3 the
    ``AWS_*`` variables, ``AWS_ENDPOINT_URL`` included) or fsspec's configuration.

    Args:
        url: the URL (shown without query string or user info).
        what: the config key it comes from, named in the message.

    Raises:
        OutputError: one line naming the URL and what to check.
    """
    if not is_url(url) or url.startswith("file://"):
        return
    where = shown(url)
    protocol = url.split("://", 1)[0].lower()
    try:
        options = _S3_PROBE if protocol in ("s3", "s3a") else {}
        fs = fsspec.filesystem(protocol, skip_instance_cache=True, **options)
        path = str(fs._strip_protocol(url)).strip("/")
    except (ImportError, ValueError, TypeError) as exc:
        raise OutputError(
            f"cannot open {what} {where}: {_one_line(exc)} (s3:// needs s3fs, gs:// gcsfs, "
            "az:// adlfs)",
            url=where,
        ) from None
    if protocol not in _BUCKETED:
        return
    bucket = path.split("/", 1)[0]
    try:
        fs.info(bucket)
    except FileNotFoundError:
        raise OutputError(
            f"{what} {where}: the bucket {bucket!r} does not exist (or these credentials cannot "
            f"see it); create it or set {what} to a bucket that exists",
            url=where,
        ) from None
    except Exception as exc:  # any transport or credentials error: say which, in one line
        raise OutputError(
            f"cannot reach {what} {where} ({type(exc).__name__}: {_one_line(exc)}); check the "
            "URL, the endpoint and the credentials in the environment",
            url=where,
        ) from None


def work_dir_for(cfg: BuildConfig, url: str) -> Path:
    """The local folder a URL release is assembled in (``output.work_dir`` or the default)."""
    if cfg.output.work_dir is not None:
        return Path(cfg.resolve(cfg.output.work_dir))
    tag = hashlib.sha256(url.encode()).hexdigest()[:12]
    return Path(cfg.base_dir).resolve() / WORK_ROOT / f"{cfg.name}-{cfg.version}-{tag}"


def check_target(url: str, cfg: BuildConfig, mode: Mode) -> None:
    """Refuse, before any work, a build whose upload would break the release rules.

    Raises:
        OutputError: ``fresh`` and the target is not empty; ``resume`` and the target holds a
            release (or an interrupted upload) of another config.
    """
    target = Target.parse(url)
    url = target.url  # as shown in messages
    files = target.listing()
    if not files or mode == "overwrite":
        return
    want = cfg.config_hash()
    if MANIFEST in files:
        if mode == "fresh":
            raise OutputError(
                f"{url} already holds a release (manifest.json); pass --overwrite to replace it "
                "or --resume to rebuild the same config into it",
                url=url,
            )
        found = (target.read_json(MANIFEST) or {}).get("config_hash")
        if found != want:
            raise OutputError(
                f"{url} holds a release of another config (hash {str(found)[:12]}, now "
                f"{want[:12]}); use --overwrite to replace it",
                url=url,
            )
        return
    if mode == "fresh":
        raise OutputError(
            f"{url} holds {len(files)} files but no manifest.json (an interrupted upload?); pass "
            "--resume to finish the same config's upload, or --overwrite to replace them",
            url=url,
        )
    stamp = target.read_json(UPLOAD_STAMP)
    if stamp is not None and stamp.get("config_hash") != want:
        raise OutputError(
            f"{url} holds an interrupted upload of another config (hash "
            f"{str(stamp.get('config_hash'))[:12]}, now {want[:12]}); use --overwrite",
            url=url,
        )


def release_files(release_dir: Path) -> list[str]:
    """Relative paths of the files to upload, ``manifest.json`` last.

    Everything under the release folder except its staging area and temp files: the files the
    manifest lists (``report/`` and ``validation/`` among them) and ``manifest.sha256``.

    Raises:
        OutputError: the local release has no ``manifest.json`` (it is not complete).
    """
    if not (release_dir / MANIFEST).is_file():
        raise OutputError(
            f"{release_dir} has no {MANIFEST}: the local release is incomplete, nothing uploaded",
            url=str(release_dir),
        )
    rels = []
    for path in release_dir.rglob("*"):
        rel = path.relative_to(release_dir).as_posix()
        if not path.is_file() or rel == MANIFEST or rel.split("/")[0] == STAGING:
            continue
        if path.name.endswith(".tmp"):
            continue
        rels.append(rel)
    return [*sorted(rels), MANIFEST]


def _put(fs: Any, local: Path, remote: str) -> None:
    fs.makedirs(fs._parent(remote), exist_ok=True)
    fs.put_file(str(local), remote)


def _upload(
    target: Target,
    release_dir: Path,
    rels: Sequence[str],
    dest: Callable[[str], str],
    done: list[str],
) -> None:
    for rel in rels:
        try:
            _put(target.fs, release_dir / rel, dest(rel))
        except Exception as exc:  # any filesystem error: say where the upload stopped
            raise OutputError(
                f"upload to {target.url} failed at {rel} after {len(done)} of {len(rels)} files "
                f"({type(exc).__name__}: {exc}); the target has no {MANIFEST} (incomplete). "
                "Re-run the build with --resume to finish the upload",
                url=target.url,
            ) from exc
        done.append(rel)


def upload_release(release_dir: str | Path, url: str) -> list[str]:
    """Upload a complete local release to ``url``, ``manifest.json`` last (see the module doc).

    Args:
        release_dir: the local release folder (holds ``manifest.json``).
        url: the fsspec URL of the release.

    Returns:
        The relative paths uploaded, in upload order.

    Raises:
        OutputError: the local release is incomplete, or a write failed (the message says how
            far the upload got; the target then has no ``manifest.json``).
    """
    local = Path(release_dir)
    rels = release_files(local)
    target = Target.parse(url)
    done: list[str] = []
    if target.renames:
        parent, name = os.path.split(target.path)
        partial = os.path.join(parent, f".{name}.partial")
        old = os.path.join(parent, f".{name}.old")
        for leftover in (partial, old):  # an earlier run that died here
            shutil.rmtree(leftover, ignore_errors=True)
        os.makedirs(partial)
        _upload(target, local, rels, lambda rel: f"{partial}/{rel}", done)
        if os.path.lexists(target.path):
            os.rename(target.path, old)
        os.rename(partial, target.path)
        shutil.rmtree(old, ignore_errors=True)
        return done

    fs = target.fs
    config_hash = read_manifest(local).config_hash
    manifest = target.join(MANIFEST)
    try:
        if fs.exists(manifest):
            fs.rm_file(manifest)  # from here the old release reads as incomplete, never mixed
        fs.makedirs(target.path, exist_ok=True)
        fs.pipe_file(target.join(UPLOAD_STAMP), json.dumps({"config_hash": config_hash}).encode())
    except Exception as exc:
        raise OutputError(
            f"cannot start the upload to {target.url} ({type(exc).__name__}: {exc})",
            url=target.url,
        ) from exc
    _upload(target, local, rels[:-1], target.join, done)
    keep = {*rels, UPLOAD_STAMP}
    for rel in target.listing():
        if rel not in keep:
            fs.rm_file(target.join(rel))  # a file of an earlier release this one lacks
    _upload(target, local, rels[-1:], target.join, done)
    fs.rm_file(target.join(UPLOAD_STAMP))
    return done


def _safe_rel(rel: str) -> bool:
    p = PurePosixPath(rel)
    return not p.is_absolute() and ".." not in p.parts


def verify_url(url: str, *, strict: bool = False) -> VerifyResult:
    """:func:`~geodelta.pipelines.release.verify.verify_release` for a release at an fsspec URL.

    A ``file://`` URL is verified in place. Elsewhere the manifest and every file it lists are
    downloaded to a temporary folder first (verification reads every byte anyway; it needs
    that much free local disk), and files at the URL that the manifest does not list are
    reported as such (problems with ``strict``).
    """
    from geodelta.pipelines.release.verify import VerifyResult, verify_release

    target = Target.parse(url)
    url = target.url  # as shown in messages
    if target.renames:
        return verify_release(target.path, strict=strict)
    fs = target.fs
    if not fs.exists(target.join(MANIFEST)):
        return VerifyResult(
            ok=False,
            samples=0,
            problems=(f"{MANIFEST}: {url} has no {MANIFEST} (no release, or an incomplete one)",),
        )
    with tempfile.TemporaryDirectory(prefix="geodelta-verify-") as tmp:
        root = Path(tmp)
        fs.get_file(target.join(MANIFEST), str(root / MANIFEST))
        try:
            manifest = read_manifest(root)
        except ReleaseError as exc:
            return VerifyResult(ok=False, samples=0, problems=(f"{MANIFEST}: {exc}",))
        listed = [s.path for s in manifest.shards] + [f.path for f in manifest.files]
        unsafe = [rel for rel in listed if not _safe_rel(rel)]
        if unsafe:
            return VerifyResult(
                ok=False,
                samples=0,
                problems=tuple(f"{MANIFEST}: path {rel!r} leaves the release" for rel in unsafe),
            )
        present = set(target.listing())
        for rel in [*listed, MANIFEST_SHA256]:
            if rel in present:  # a missing one is reported by verify_release
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(target.join(rel), str(root / rel))
        for rel in sorted(present - {*listed, MANIFEST, MANIFEST_SHA256}):
            if _safe_rel(rel):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).touch()  # only its name matters: "not in the manifest"
        return verify_release(root, strict=strict)
