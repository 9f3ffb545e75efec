"""Experiment folders on any pyarrow filesystem: a local path, or a URI (``s3://``, ``gs://``, ``file://``, ...).

With a URI as ``output.dir`` the job works in a local copy (``<cache_dir>/experiments/<name>-<hash>``) and mirrors
it to the URI: everything already there is pulled before the first stage (so a rerun, on the same machine or another,
resumes), each teacher block is pushed as soon as it is written, and each stage's files are pushed when the stage
ends. Ray Train writes its checkpoints straight to ``<URI>/ray_train``, and training workers read their rows from
the URI, so no node needs the driver's disk; vLLM engines on other nodes copy a model folder from the URI to their
own disk (``fetch_folder``). Task data files may be URIs too (``read_bytes``).

Credentials come from the environment (AWS_*, AWS_ENDPOINT_URL for S3-compatible stores, GOOGLE_APPLICATION_
CREDENTIALS, ...) or instance roles, as pyarrow finds them. A URI that carries them (``s3://KEY:SECRET@bucket``,
which pyarrow would accept) is refused before the config is logged or saved (``reject_credentials``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# A URI anywhere in a text: scheme:// and what follows up to a space, a quote or a bracket.
_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^\s'\"\[\]{},]+)")


def is_uri(location: str) -> bool:
    return "://" in location


def _userinfo(rest: str) -> int:
    """Where the userinfo of a URI's part after ``scheme://`` ends (the ``@``), or -1 when it has none. pyarrow
    accepts S3 keys there, and a secret may hold "/", "+" or "@" unescaped, so userinfo with a ":" runs to the last
    "@"; without a ":" it is the text before an "@" that comes before the first "/" ("s3://bucket/a@b" is a path)."""
    at = rest.rfind("@")
    if at < 0:
        return -1
    head = rest[:at]
    return at if ":" in head.split("/", 1)[0] or "/" not in head else -1


def has_credentials(text: str) -> bool:
    """Whether ``text`` holds a URI that carries a user or a secret (``s3://KEY:SECRET@bucket``)."""
    return any(_userinfo(m.group(2)) >= 0 for m in _URI.finditer(text))


def redact(text: str) -> str:
    """``text`` with the userinfo of every URI in it replaced by ``***`` (safe to print, log or save)."""
    def hide(m: re.Match) -> str:
        at = _userinfo(m.group(2))
        return m.group(0) if at < 0 else f"{m.group(1)}***{m.group(2)[at:]}"

    return _URI.sub(hide, text)


def redacted(value: Any) -> Any:
    """``value`` with every string in it ``redact``-ed, through dicts, lists and tuples."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redacted(k): redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redacted(v) for v in value)
    return value


def reject_credentials(cfg: Any, prefix: str = "") -> None:
    """Raise ``ConfigError`` naming the dotted key of the first config string, at any depth (dicts such as
    ``teacher.engine_kwargs`` included), that holds a URI carrying credentials (``s3://KEY:SECRET@bucket/...``).
    Called before the config is saved or any location is logged."""
    from scotd.config import ConfigError

    if dataclasses.is_dataclass(cfg):
        for f in dataclasses.fields(cfg):
            reject_credentials(getattr(cfg, f.name), f"{prefix}.{f.name}" if prefix else f.name)
    elif isinstance(cfg, (tuple, list)):
        for i, value in enumerate(cfg):
            reject_credentials(value, f"{prefix}.{i}")
    elif isinstance(cfg, dict):
        for key, value in cfg.items():
            reject_credentials(value, f"{prefix}.{key}")
    elif isinstance(cfg, str) and has_credentials(cfg):
        raise ConfigError(f"{prefix}: {redact(cfg)}: a URI must not carry credentials (user:secret@); give them "
                          "through the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                          "GOOGLE_APPLICATION_CREDENTIALS) or the nodes' instance role / service account")


def read_bytes(location: str | Path) -> bytes:
    """The bytes of a local file or of a file at a URI on any pyarrow filesystem; FileNotFoundError if absent."""
    if not is_uri(str(location)):
        return Path(location).read_bytes()
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(str(location))
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(redact(str(location)))
    with fs.open_input_stream(path) as src:
        return src.read()


def fetch_folder(location: str, cache_dir: str | Path) -> Path:
    """A local folder holding the files of ``location``: the path itself when it is local; for a URI, a copy under
    ``<cache_dir>/models/<name>-<digest>``. The digest covers the URI and every file's path, size and time, so a
    folder that changed at the URI is fetched again. Engines on one node may fetch at once: each copies into a
    temporary sibling and renames it into place, so none ever reads half a folder."""
    if not is_uri(location):
        return Path(location)
    import pyarrow.fs as pafs

    location = location.rstrip("/")
    fs, root = pafs.FileSystem.from_uri(location)
    files = sorted((item.path[len(root):].lstrip("/"), item.size, item.mtime_ns) for item in
                   fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True))
                   if item.type == pafs.FileType.File)
    if not files:
        raise FileNotFoundError(f"{redact(location)}: no files there")
    digest = hashlib.sha256(repr((location, files)).encode()).hexdigest()[:12]
    target = Path(cache_dir).expanduser() / "models" / f"{location.rsplit('/', 1)[-1]}-{digest}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for relative, _, _ in files:
            (partial / relative).parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(f"{root}/{relative}") as src, open(partial / relative, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
        try:
            partial.rename(target)
        except OSError:
            if not target.is_dir():  # not another engine's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("storage: fetched %d files from %s into %s", len(files), redact(location), target)
    return target


def local_copy(location: str, cache_dir: Path) -> Path:
    """The local working folder of an experiment stored at ``location`` (the path itself when it is local)."""
    if not is_uri(location):
        return Path(location).expanduser().resolve()
    location = location.rstrip("/")
    name = location.rsplit("/", 1)[-1] or "experiment"
    digest = hashlib.sha256(location.encode()).hexdigest()[:10]
    return cache_dir.expanduser() / "experiments" / f"{name}-{digest}"


class Mirror:
    """Copies files between an experiment's local folder and its URI; every method is a no-op for a local path."""

    def __init__(self, location: str, local: Path):
        reject_credentials(location, "output.dir")
        self.uri = location.rstrip("/") if is_uri(location) else None
        self.local = local
        if self.uri:
            import pyarrow.fs as pafs

            from scotd.config import ConfigError

            try:
                self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
            except Exception as err:  # pyarrow raises ArrowInvalid / OSError with its own words
                raise ConfigError(f"output.dir: {redact(location)!r}: not a filesystem pyarrow can open: "
                                  f"{redact(str(err))}") from None

    def check_writable(self) -> None:
        """Write and remove a probe file at the URI, so that a location the job cannot write fails before any work
        (``ConfigError`` naming ``output.dir``), not when the first stage's files are pushed."""
        if not self.uri:
            return
        from scotd.config import ConfigError

        probe = f"{self.root}/.scotd-write-check"
        try:
            self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(probe) as out:
                out.write(b"scotd")
            self.fs.delete_file(probe)
        except OSError as err:
            raise ConfigError(f"output.dir: {redact(self.uri)}: cannot write there: {redact(str(err))}") from None

    def delete(self, *relatives: str) -> None:
        """Remove files or folders (paths relative to the experiment) at the URI, so a pull cannot bring them back."""
        if not self.uri:
            return
        import pyarrow.fs as pafs

        for relative in relatives:
            target = f"{self.root}/{relative}"
            kind = self.fs.get_file_info(target).type
            if kind == pafs.FileType.Directory:
                self.fs.delete_dir(target)
            elif kind == pafs.FileType.File:
                self.fs.delete_file(target)

    def remote(self, relative: str) -> str:
        """The location of ``relative`` (a path inside the experiment) for readers on any node."""
        return f"{self.uri}/{relative}" if self.uri else str(self.local / relative)

    def pull(self) -> int:
        """Copy whatever the URI holds into the local folder (files already here are kept); returns a file count."""
        if not self.uri:
            return 0
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.root)
        if info.type == pafs.FileType.NotFound:
            return 0
        selector = pafs.FileSelector(self.root, recursive=True)
        count = 0
        for item in self.fs.get_file_info(selector):
            if item.type != pafs.FileType.File:
                continue
            relative = item.path[len(self.root):].lstrip("/")
            if relative.startswith("ray_train/"):
                continue  # Ray Train reads its checkpoints from the URI itself
            target = self.local / relative
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(item.path) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
            if item.mtime_ns is not None:  # so that the next push sees the file as already there
                os.utime(target, ns=(item.mtime_ns, item.mtime_ns))
            count += 1
        log.info("storage: pulled %d files from %s into %s", count, self.uri, self.local)
        return count

    def push(self, *relatives: str) -> int:
        """Copy files or folders (paths relative to the local folder) to the same places under the URI; a file the
        URI already holds with the same size and a newer time is left alone. Returns the number of files copied."""
        if not self.uri:
            return 0
        import pyarrow.fs as pafs

        files = []
        for relative in relatives:
            source = self.local / relative
            files += sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else (
                [source] if source.is_file() else [])
        if not files:
            return 0
        targets = [f"{self.root}/{p.relative_to(self.local).as_posix()}" for p in files]
        there = {info.path: info for info in self.fs.get_file_info(targets)}
        count = 0
        for source, target in zip(files, targets):
            info, stat = there[target], source.stat()
            if (info.type == pafs.FileType.File and info.size == stat.st_size and info.mtime_ns is not None
                    and info.mtime_ns >= stat.st_mtime_ns):
                continue
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with open(source, "rb") as src, self.fs.open_output_stream(target) as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
            count += 1
        return count
