"""scripts/extract_emoji_images.py, which install_object_sources.sh runs: one PNG per single code
point from the Noto font's bitmaps and from Twemoji's SVGs. The real font and rsvg-convert are not
needed: the test gives the script a stand-in font object and a stand-in rasteriser on PATH."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.support.scripts import load_script


@pytest.fixture(scope="module")
def extract():
    return load_script("extract_emoji_images")


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (136, 128), (*colour, 255)).save(buf, format="PNG")
    return buf.getvalue()


class _Bitmap:
    def __init__(self, data: bytes) -> None:
        self.data, self.imageData = data, None

    def decompile(self) -> None:
        self.imageData = self.data


class _Font:
    """What extract_noto reads of a fontTools TTFont: the cmap and the first CBDT strike."""

    def __init__(self, bitmaps: dict[str, bytes], cmap: dict[int, str]) -> None:
        self.strike = {name: _Bitmap(data) for name, data in bitmaps.items()}
        self.cmap = cmap

    def __getitem__(self, table: str):
        assert table == "CBDT"
        return type("CBDT", (), {"strikeData": [self.strike]})()

    def getBestCmap(self) -> dict[int, str]:
        return self.cmap


def test_noto_bitmaps_are_written_unchanged_one_per_code_point(extract, tmp_path, monkeypatch):
    dog, apple, digit = _png((200, 150, 90)), _png((220, 20, 30)), _png((9, 9, 9))
    font = _Font({"u1F415": dog, "u1F34E": apple, "u0031": digit},
                 {0x1F415: "u1F415", 0x1F34E: "u1F34E", 0x31: "u0031", 0x1F999: "no_bitmap"})
    import fontTools.ttLib

    monkeypatch.setattr(fontTools.ttLib, "TTFont", lambda path: font)
    out = tmp_path / "noto"
    out.mkdir()
    assert extract.extract_noto(Path("NotoColorEmoji.ttf"), out) == 2
    assert sorted(p.name for p in out.iterdir()) == ["1f34e.png", "1f415.png"]  # no ASCII, no missing glyph
    assert (out / "1f415.png").read_bytes() == dog
    (out / "1f415.png").write_bytes(b"kept")  # idempotent: what is there is left alone
    extract.extract_noto(Path("NotoColorEmoji.ttf"), out)
    assert (out / "1f415.png").read_bytes() == b"kept"


def _fake_rsvg(bin_dir: Path, log: Path) -> None:
    """An rsvg-convert that writes a small PNG to its -o argument and logs each call."""
    bin_dir.mkdir()
    tool = bin_dir / "rsvg-convert"
    tool.write_text(f"""#!{sys.executable}
import sys
from PIL import Image
args = sys.argv[1:]
open({str(log)!r}, "a").write(" ".join(args) + "\\n")
size = int(args[args.index("-w") + 1])
Image.new("RGBA", (size, size), (1, 2, 3, 255)).save(args[args.index("-o") + 1])
""")
    tool.chmod(0o755)


def test_twemoji_svgs_of_one_code_point_are_rasterised_once(extract, tmp_path, monkeypatch):
    svgs = tmp_path / "package"
    svgs.mkdir()
    for stem in ("1f415", "1f34e", "1f415-200d-1f9ba", "1f1eb-1f1f7"):  # two single, two sequences
        (svgs / f"{stem}.svg").write_text("<svg/>")
    log = tmp_path / "calls.txt"
    _fake_rsvg(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "twemoji"
    out.mkdir()
    assert extract.rasterise_twemoji(svgs, out, 64) == 2
    assert sorted(p.name for p in out.iterdir()) == ["1f34e.png", "1f415.png"]
    assert Image.open(out / "1f415.png").size == (64, 64)
    extract.rasterise_twemoji(svgs, out, 64)  # a second run converts nothing again
    assert len(log.read_text().splitlines()) == 2


def test_twemoji_without_rsvg_convert_names_the_package(extract, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match="librsvg2-bin"):
        extract.rasterise_twemoji(tmp_path, tmp_path, 64)
