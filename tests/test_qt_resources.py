"""Qt resource bundles (.rcc): the reader, and real photos loaded out of one. The tests write their
own tiny bundles in Qt's format (version 3, the root first, each directory's children together)."""

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from mmapp.data.objects.qt_resources import read_resources
from mmapp.data.objects.real_photos import PhotoSpec, load_photo
from mmapp.errors import DataError


def write_rcc(path: Path, files: dict[str, bytes], compress: bool = True) -> None:
    """files: "dir/sub/name" -> bytes."""
    tree: dict = {}
    for name, data in files.items():
        node = tree
        *dirs, leaf = name.split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = data
    names, data_area, entries = bytearray(), bytearray(), []

    def name_offset(name: str) -> int:
        offset = len(names)
        encoded = name.encode("utf-16-be")
        names.extend(struct.pack(">HI", len(encoded) // 2, 0) + encoded)
        return offset

    queue = [("", tree)]  # breadth first, as rcc writes it
    entries.append(None)
    slots = {id(tree): 0}
    while queue:
        name, node = queue.pop(0)
        index = slots[id(node)]
        children = sorted(node.items())
        first = len(entries)
        entries[index] = struct.pack(">IHII", name_offset(name), 0x02, len(children), first) + bytes(8)
        for child_name, child in children:
            if isinstance(child, dict):
                slots[id(child)] = len(entries)
                entries.append(None)
                queue.append((child_name, child))
            else:
                payload = struct.pack(">I", len(child)) + zlib.compress(child) if compress else child
                offset = len(data_area)
                data_area.extend(struct.pack(">I", len(payload)) + payload)
                entries.append(struct.pack(">IHHHI", name_offset(child_name), 0x01 if compress else 0, 0, 0, offset)
                               + bytes(8))
    header = 24
    tree_blob = b"".join(entries)
    data_at, names_at = header + len(tree_blob), header + len(tree_blob) + len(data_area)
    path.write_bytes(b"qres" + struct.pack(">IIIII", 3, header, data_at, names_at, 0) + tree_blob
                     + bytes(data_area) + bytes(names))


def png(colour: tuple[int, int, int], size=(20, 10)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("compress", [True, False])
def test_read_resources_finds_every_file_with_its_path(tmp_path, compress):
    files = {"images/tools/hammer1.png": png((200, 0, 0)), "images/tools/README": b"License: CC0-1.0\n",
             "images/fishes/fish1.png": png((0, 0, 200)), "top.txt": b"x" * 1000}
    write_rcc(tmp_path / "a.rcc", files, compress=compress)
    assert read_resources(tmp_path / "a.rcc") == files


def test_read_resources_refuses_what_is_not_a_bundle(tmp_path):
    (tmp_path / "b.rcc").write_bytes(b"PK\x03\x04 not qt")
    with pytest.raises(DataError, match="not a Qt resource bundle"):
        read_resources(tmp_path / "b.rcc")
    write_rcc(tmp_path / "c.rcc", {"a/b.png": png((1, 2, 3))})
    (tmp_path / "c.rcc").write_bytes((tmp_path / "c.rcc").read_bytes()[:40])  # cut short
    with pytest.raises(DataError, match="damaged"):
        read_resources(tmp_path / "c.rcc")


def test_load_photo_from_a_bundle_or_says_why_not(tmp_path):
    bundle = tmp_path / "categorization.rcc"
    write_rcc(bundle, {"gcompris/src/images/tools/hammer1.png": png((10, 200, 10), (32, 24))})
    image = load_photo(PhotoSpec("hammer", "gcompris-qt-data", f"{bundle}!gcompris/src/images/tools/hammer1.png",
                                 ("hammer",), "CC0-1.0", ""))
    assert image.mode == "RGB" and image.size == (32, 24) and image.getpixel((0, 0)) == (10, 200, 10)
    with pytest.raises(LookupError, match="not in"):
        load_photo(PhotoSpec("saw", "gcompris-qt-data", f"{bundle}!gcompris/src/images/tools/saw.png", (), "", ""))
    with pytest.raises(LookupError, match="gcompris-qt-data not installed"):
        load_photo(PhotoSpec("x", "gcompris-qt-data", f"{tmp_path}/missing.rcc!a.png", (), "", ""))
