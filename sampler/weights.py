"""Locating and fingerprinting local model weights. Nothing here downloads anything.

Every model used for prompt subsampling and metrics is loaded from a file or folder named on the
command line; a missing or wrong path fails early with a message naming the file expected.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path


class WeightsError(ValueError):
    """Model weights that cannot be used; the message names the file or folder expected."""


def require_file(path: str | os.PathLike, what: str, candidates: Sequence[str] = ()) -> Path:
    """``path`` itself if it is a file; for a folder, the first of ``candidates`` inside it.

    ``what`` describes the expected file in the error (e.g. "an open_clip ViT-g-14 checkpoint").
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for name in candidates:
            if (p / name).is_file():
                return p / name
        hint = f" (looked for {', '.join(candidates)})" if candidates else ""
        raise WeightsError(f"{p} is a folder, expected {what}{hint}")
    raise WeightsError(f"{p} does not exist: expected {what}")


def require_folder(path: str | os.PathLike, what: str, required: Sequence[str]) -> Path:
    """``path`` if it is a folder holding every file in ``required``, else WeightsError naming them."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise WeightsError(f"{p} is not a folder: expected {what}")
    missing = [name for name in required if not (p / name).is_file()]
    if missing:
        raise WeightsError(f"{p} is not {what}: missing {', '.join(missing)}")
    return p


def file_fingerprint(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """A cheap identity for a large weights file: SHA-256 of its size, first and last MiB.

    Hashing a multi-GB checkpoint fully on every run costs tens of seconds; size plus head and tail
    distinguishes different checkpoints in practice (a re-saved or fine-tuned file changes them).
    """
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(size - chunk, chunk))
            h.update(f.read(chunk))
    return h.hexdigest()


def folder_fingerprint(path: str | os.PathLike, names: Sequence[str]) -> str:
    """Fingerprint of the named files of a model folder (config and weights)."""
    h = hashlib.sha256()
    for name in sorted(names):
        f = Path(path) / name
        if f.is_file():
            h.update(name.encode())
            h.update(file_fingerprint(f).encode())
    return h.hexdigest()
