"""Reading PNG files independently of the code under test (the blinding checks rely on it)."""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk_types(data: bytes) -> list[str]:
    """The chunk types of a PNG file, in order (e.g. ['IHDR', 'IDAT', 'IEND'])."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG file"
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kinds.append(data[pos + 4 : pos + 8].decode("ascii"))
        pos += 12 + length
    return kinds
