"""Experiment folders on any pyarrow filesystem: a local path, or a URI (``s3://``, ``gs://``, ``file://``, ...).

With a URI as ``output.dir`` the job works in a local copy (``<cache_dir>/experiments/<name>-<hash>``) and mirrors
it to the URI: everything already there is pulled before the first stage (so a rerun, on this machine or another,
resumes), each teacher block is pushed as soon as it is written, and each stage's files are pushed when the stage
ends. Ray Train writes its checkpoints straight to ``<URI>/ray_train``, and training workers read their rows from
the URI, so no node needs the driver's disk. Credentials come from the environment (AWS_*, GOOGLE_APPLICATION_
CREDENTIALS, ...) as pyarrow reads them; they are never written anywhere by scotd.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def is_uri(location: str) -> bool:
    return "://" in location


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
        self.uri = location.rstrip("/") if is_uri(location) else None
        self.local = local
        if self.uri:
            import pyarrow.fs as pafs

            try:
                self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
            except Exception as err:  # pyarrow raises ArrowInvalid / OSError with its own words
                raise ValueError(f"output.dir: {location!r}: not a filesystem pyarrow can open: {err}") from None

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
