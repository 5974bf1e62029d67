"""Writing a pair-set folder safely: opaque image files, the shared manifest, its pair keys.

Crash safety: each file is written to a hidden temporary name, fsynced and renamed into place; a
manifest line is appended (flushed and fsynced, under the folder's lock) only after its files
exist. Several processes may append to one manifest; `ManifestKeys` tells each which pair keys
the others have written meanwhile.
"""

from __future__ import annotations

import io
import json
import os
import secrets
from pathlib import Path

from sampler.manifest import MANIFEST_NAME, PairRecord

MAPS_DIR = "maps"


def png_bytes(image) -> bytes:
    """PNG of the pixels only: a fresh image without any text/metadata chunks."""
    import numpy as np
    from PIL import Image

    clean = Image.fromarray(np.asarray(image.convert("RGB")))
    buf = io.BytesIO()
    clean.save(buf, format="PNG")
    return buf.getvalue()


def write_file(folder: Path, data: bytes, suffix: str = ".png") -> str:
    """Write `data` under an opaque random name (32 hex + suffix) via temp file + fsync + rename;
    return the name."""
    name = secrets.token_hex(16) + suffix
    tmp = folder / f".tmp-{secrets.token_hex(8)}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / name)
    return name


def append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def remove_files(out_dir: Path, record: PairRecord) -> None:
    for name in (record.baseline.file, record.treatment.file, record.map_file):
        if name:
            (out_dir / name).unlink(missing_ok=True)


class ManifestKeys:
    """The pair keys in a manifest that other processes may be appending to. `refresh` reads
    only the bytes added since the last call; call it under the manifest lock."""

    def __init__(self, path: Path):
        self.path, self.offset, self.keys = path, 0, set()

    def refresh(self) -> set[str]:
        if self.path.is_file():
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]
            self.offset += len(complete)
            for line in complete.splitlines():
                if line.strip():
                    try:
                        self.keys.add(json.loads(line)["pair_key"])
                    except (ValueError, KeyError, TypeError):
                        pass  # iter_records reports bad lines; here only keys matter
        return self.keys


class ManifestWriter:
    """Appends records to OUT/manifest.jsonl under OUT/.manifest.lock, never a pair key twice."""

    def __init__(self, out_dir: Path):
        from filelock import FileLock

        self.out_dir = Path(out_dir)
        self.path = self.out_dir / MANIFEST_NAME
        self.lock = FileLock(str(self.out_dir / ".manifest.lock"))
        self.keys = ManifestKeys(self.path)

    def append(self, record: PairRecord) -> bool:
        """Append `record` unless another run wrote its pair key meanwhile; then remove its files
        and return False."""
        with self.lock:
            duplicate = record.pair_key in self.keys.refresh()
            if not duplicate:
                append_line(self.path, record.to_json())
                self.keys.keys.add(record.pair_key)
        if duplicate:
            remove_files(self.out_dir, record)
        return not duplicate
