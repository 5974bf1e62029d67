"""Blinded image encoding and the rules for serving images.

Every image a participant sees is re-encoded here: decoded to RGB pixels, written as a PNG with no
ancillary chunks (no text, time, gamma, ICC or EXIF), and padded to one fixed byte length per pair
set. The padding lives inside the zlib stream of the single IDAT chunk as empty deflate blocks, so
that neither the file size nor the size of any chunk tells a sharper (or degraded) image from its
partner. Images are then addressed only by a random token (`/i/{token}`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
import io
import secrets
import struct
import zlib

from PIL import Image as PILImage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Padded length = largest encoded image of the pair set rounded up to this many bytes.
SIZE_QUANTUM = 1024
# The largest deflate tail `_deflate_tail` may need, so every image can reach the target.
_MIN_TAIL = 8


def new_token() -> str:
    """A random, URL-safe image token: 32 hex characters, unrelated to arm, file or content."""
    return secrets.token_hex(16)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _raw_scanlines(img: PILImage.Image) -> bytes:
    """RGB pixels as PNG scanlines with filter type 0 (None) before each row."""
    width, height = img.size
    row = width * 3
    pixels = img.tobytes()
    return b"".join(b"\x00" + pixels[y * row : (y + 1) * row] for y in range(height))


def _deflate_tail(extra: int) -> bytes:
    """Byte-aligned deflate blocks that decode to nothing and end the stream, `extra` bytes long.

    Built from empty fixed-Huffman blocks (10 bits each: 3 header bits + the end-of-block code)
    and empty stored blocks (5 bytes once byte-aligned). Every length >= 5 is reachable.
    """
    # n empty fixed blocks, the last one final, take ceil(10 n / 8) bytes: 2, 3, 4, 5 (n = 1..4),
    # covering the residues 2, 3, 4, 0 modulo 5. Residue 1 uses one empty fixed block followed by
    # a final empty stored block: 10 + 3 bits, aligned to 2 bytes, plus LEN/NLEN = 6 bytes.
    # Empty stored blocks (5 bytes each, byte-aligned) in front make up the rest.
    if extra % 5 == 1:
        if extra < 6:
            raise ValueError("a deflate tail cannot be 1 byte longer than a multiple of 5 below 6")
        end = (2 | (1 << 10)).to_bytes(2, "little") + b"\x00\x00\xff\xff"
    else:
        n = {2: 1, 3: 2, 4: 3, 0: 4}[extra % 5]
        bits = 0
        for i in range(n):
            final = 1 if i == n - 1 else 0
            # header: BFINAL (1 bit), BTYPE=01 fixed Huffman (2 bits), then EOB = 7 zero bits.
            bits |= (final | (1 << 1)) << (10 * i)
        end = bits.to_bytes(-(-10 * n // 8), "little")
    if len(end) > extra:
        raise ValueError(f"a deflate tail cannot be {extra} bytes long")
    # BFINAL=0 BTYPE=00 (stored), LEN=0, NLEN=0xffff.
    return b"\x00\x00\x00\xff\xff" * ((extra - len(end)) // 5) + end


def _encode(img: PILImage.Image, idat_len: int | None) -> bytes:
    width, height = img.size
    raw = _raw_scanlines(img)
    compressor = zlib.compressobj(6)
    body = compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)
    adler = struct.pack(">I", zlib.adler32(raw) & 0xFFFFFFFF)
    tail_len = _MIN_TAIL if idat_len is None else idat_len - len(body) - len(adler)
    if tail_len < 2:
        raise ValueError("image does not fit the padded size")
    idat = body + _deflate_tail(tail_len) + adler
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def load_rgb(data: bytes) -> PILImage.Image:
    """Decode any image PIL reads to plain RGB pixels (drops alpha, palette and all metadata)."""
    with PILImage.open(io.BytesIO(data)) as im:
        im.load()
        return im.convert("RGB")


def encoded_length(img: PILImage.Image) -> int:
    """Bytes `blind_png(img, ...)` needs at least (with the smallest deflate tail)."""
    return len(_encode(img, None))


def padded_size(lengths: list[int]) -> int:
    """The common byte length for a group of images: the largest, rounded up to SIZE_QUANTUM."""
    return -(-max(lengths) // SIZE_QUANTUM) * SIZE_QUANTUM


def blind_png(img: PILImage.Image, size: int) -> bytes:
    """`img` as a metadata-free RGB PNG of exactly `size` bytes (see the module docstring)."""
    overhead = len(PNG_SIGNATURE) + 12 + 13 + 12 + 12  # signature, IHDR, IDAT framing, IEND
    out = _encode(img, size - overhead)
    assert len(out) == size, (len(out), size)
    return out


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Identical for every image: no ETag, no Last-Modified, no file names.
IMAGE_HEADERS = {"Cache-Control": "private, max-age=86400, immutable"}


def degrade(img: PILImage.Image) -> PILImage.Image:
    """An obviously worse twin for gold trials: heavy blur and washed-out contrast, same size."""
    from PIL import ImageEnhance, ImageFilter

    radius = max(2.0, min(img.size) / 16)
    blurred = img.filter(ImageFilter.GaussianBlur(radius))
    return ImageEnhance.Contrast(blurred).enhance(0.45)


def load_manifest_image(folder: Path, rec_no: int, file: str) -> PILImage.Image:
    """Image `file` of a pair-set folder as RGB; ManifestError naming the record when it cannot be decoded."""
    from sampler.manifest import MANIFEST_NAME, ManifestError

    try:
        return load_rgb((folder / file).read_bytes())
    except Exception as e:  # PIL raises many types for broken files
        raise ManifestError(f"{folder / MANIFEST_NAME}: record {rec_no}: image {file} cannot be decoded ({e})") from None
