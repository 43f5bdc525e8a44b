"""Read a compiled Qt resource bundle (``.rcc``): the files a Qt application packs into one file.

GCompris (Debian ``gcompris-qt-data``) ships its activities' photographs this way; the real-photo
list (``real_photos.py``) reads single files out of its bundles. The format, as Qt's ``rcc`` writes
it (big-endian throughout):

* header: ``b"qres"``, version, tree offset, data offset, names offset (uint32 each), and from
  version 3 a uint32 of flags;
* tree: one entry per node, the root first: name offset (uint32), flags (uint16: 1 zlib-compressed,
  2 directory, 4 zstd-compressed), then for a directory its child count and first child's index
  (uint32 each), for a file its country and language (uint16 each) and data offset (uint32); from
  version 2 each entry ends with a uint64 modification time;
* names: length in UTF-16 units (uint16), hash (uint32), the name in UTF-16BE;
* data: length (uint32) and the bytes; a zlib-compressed file's bytes start with its uncompressed
  length (uint32, ``qCompress``'s format).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from mmapp.errors import DataError

COMPRESSED, DIRECTORY, COMPRESSED_ZSTD = 0x01, 0x02, 0x04


def read_resources(path: str | Path) -> dict[str, bytes]:
    """Every file in the bundle: its resource path ("images/tools/hammer1.webp", no leading ":/")
    -> its bytes, decompressed."""
    path = Path(path)
    blob = path.read_bytes()
    if blob[:4] != b"qres":
        raise DataError(f"{path}: not a Qt resource bundle (no 'qres' header)")
    version, tree, data, names = struct.unpack_from(">IIII", blob, 4)
    entry_size = 22 if version >= 2 else 14

    def name_at(offset: int) -> str:
        (length,) = struct.unpack_from(">H", blob, names + offset)
        start = names + offset + 6  # after the length and the hash
        return blob[start:start + 2 * length].decode("utf-16-be")

    def payload(offset: int, flags: int, where: str) -> bytes:
        (length,) = struct.unpack_from(">I", blob, data + offset)
        raw = blob[data + offset + 4: data + offset + 4 + length]
        if flags & COMPRESSED:
            return zlib.decompress(raw[4:])
        if flags & COMPRESSED_ZSTD:
            raise DataError(f"{path}: {where} is zstd-compressed, which this reader does not decompress")
        return raw

    files: dict[str, bytes] = {}

    def walk(index: int, prefix: str) -> None:
        at = tree + index * entry_size
        name_offset, flags = struct.unpack_from(">IH", blob, at)
        name = name_at(name_offset) if index else ""  # the root has no name of its own
        where = f"{prefix}{name}"
        if flags & DIRECTORY:
            count, first = struct.unpack_from(">II", blob, at + 6)
            for child in range(first, first + count):
                walk(child, f"{where}/" if where else "")
        else:
            (offset,) = struct.unpack_from(">I", blob, at + 10)
            files[where] = payload(offset, flags, where)

    try:
        walk(0, "")
    except (struct.error, zlib.error, UnicodeDecodeError) as e:
        raise DataError(f"{path}: a damaged Qt resource bundle ({type(e).__name__}: {e})") from None
    return files
