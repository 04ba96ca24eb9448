"""File hashing, one way for every layer: a model's hash in the defect log, an engine's checksum in its sidecar."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks (an engine file can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def output_folder(path: str | Path | None) -> Iterator[None]:
    """An output folder a command creates (`train --out`): if the command fails, a folder it created and left
    empty is removed again, so a failed run leaves nothing that looks like a result. Files it wrote stay."""
    p = Path(path) if path is not None else None
    existed = p is None or p.exists()
    try:
        yield
    except BaseException:
        if not existed and p.is_dir():
            _remove_empty(p)
        raise


def _remove_empty(folder: Path) -> None:
    for sub in sorted((d for d in folder.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
        with suppress(OSError):
            sub.rmdir()  # only succeeds when empty
    with suppress(OSError):
        folder.rmdir()
