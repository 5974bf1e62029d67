"""Pair sets uploaded as a zip: safe unpacking and the import of what it holds."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import Session

from app.studies.importer import import_pair_set
from app.store.models import PairSet
from sampler.manifest import MANIFEST_NAME, ManifestError

# Upper bound on an uploaded pair-set zip once unpacked (guards against zip bombs).
MAX_UNPACKED_BYTES = 4 << 30


def unpack_zip(archive: Path, dest: Path) -> Path:
    """Unpack a pair-set zip safely and return the folder holding manifest.jsonl.

    Rejects members outside `dest` (absolute paths, '..'), links, and archives that unpack to
    more than MAX_UNPACKED_BYTES. The manifest may sit at the top or in one folder.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise ValueError("the upload is not a zip file") from None
    with zf:
        total = 0
        root = dest.resolve()
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(root) or info.filename.startswith(("/", "\\")):
                raise ValueError(f"zip member {info.filename!r} points outside the archive")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise ValueError(f"zip member {info.filename!r} is a symbolic link")
            total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise ValueError("the zip unpacks to more than 4 GiB")
        try:
            zf.extractall(dest)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # a member's data is corrupt (CRC, deflate)
            raise ValueError(f"the zip is damaged: {e}") from None
        except (NotImplementedError, RuntimeError) as e:  # an unknown compression method, encryption
            raise ValueError(f"the zip cannot be unpacked: {e}") from None
    manifests = [p for p in dest.rglob(MANIFEST_NAME) if "__MACOSX" not in p.parts]
    if len(manifests) != 1 or len(manifests[0].relative_to(dest).parts) > 2:
        raise ValueError(f"the zip must hold exactly one {MANIFEST_NAME}, at the top or in one folder")
    return manifests[0].parent


def import_zip(session: Session, upload: BinaryIO, filename: str) -> PairSet:
    """Import an uploaded pair-set zip (not committed). ValueError/ManifestError messages start
    with the zip's name and name files relative to it, never the temporary folder."""
    with tempfile.TemporaryDirectory(prefix="sfgeval-upload-") as tmp:
        archive = Path(tmp) / "upload.zip"
        with open(archive, "wb") as f:
            shutil.copyfileobj(upload, f)
        try:
            folder = unpack_zip(archive, Path(tmp) / "pairs")
            pair_set = import_pair_set(session, folder, name=Path(filename or "upload.zip").stem)
        except (ManifestError, ValueError) as e:
            message = f"{filename}: {e}"
            for prefix in (str(Path(tmp).resolve() / "pairs") + "/", str(Path(tmp) / "pairs") + "/"):
                message = message.replace(prefix, "")
            raise ValueError(message) from None
        pair_set.source = f"upload:{filename}"
        return pair_set
