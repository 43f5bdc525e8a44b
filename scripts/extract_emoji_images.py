"""Write one PNG per single-code-point emoji, named like the Fluent 3D files' code points
(``1f415.png``), from the two extra emoji sets (docs/objects.md, "Sources and licences"):

    python scripts/extract_emoji_images.py noto --font /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf --out DIR
    python scripts/extract_emoji_images.py twemoji --svg-dir PACKAGE --out DIR [--size 256]

- ``noto``: Debian ``fonts-noto-color-emoji`` keeps each emoji as a PNG bitmap (136x128) in the
  font's CBDT table; the bytes are written out unchanged (fontTools, which matplotlib installs).
- ``twemoji``: npm ``@twemoji/svg`` ships SVGs; each is rasterised to ``--size`` pixels with
  ``rsvg-convert`` (Debian ``librsvg2-bin``).

Run by ``scripts/install_object_sources.sh``; idempotent (existing PNGs are kept).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

SINGLE = re.compile(r"^[0-9a-f]{4,5}$")  # one code point, as the file stems of the emoji sets spell it


def extract_noto(font_path: Path, out: Path) -> int:
    """The font's bitmap for every code point it maps -> ``out/<hex>.png``; returns how many."""
    from fontTools.ttLib import TTFont

    font = TTFont(str(font_path))
    strikes = font["CBDT"].strikeData
    if not strikes:
        raise SystemExit(f"{font_path}: no bitmap strike in its CBDT table")
    bitmaps = strikes[0]
    written = 0
    for code, glyph in sorted(font.getBestCmap().items()):
        if code < 0x80 or glyph not in bitmaps:
            continue
        data = bitmaps[glyph]
        data.decompile()
        target = out / f"{code:x}.png"
        if not target.exists():
            target.write_bytes(data.imageData)
        written += 1
    return written


def rasterise_twemoji(svg_dir: Path, out: Path, size: int) -> int:
    """Every single-code-point ``svg_dir/<hex>.svg`` -> ``out/<hex>.png`` (``size`` x ``size``)."""
    tool = shutil.which("rsvg-convert")
    if tool is None:
        raise SystemExit("rsvg-convert not found: sudo apt-get install librsvg2-bin")
    svgs = sorted(p for p in svg_dir.glob("*.svg") if SINGLE.match(p.stem))
    if not svgs:
        raise SystemExit(f"no single-code-point SVGs in {svg_dir}")
    for svg in svgs:
        target = out / f"{svg.stem}.png"
        if not target.exists():
            subprocess.run([tool, "-w", str(size), "-h", str(size), "-o", str(target), str(svg)], check=True)
    return len(svgs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="source", required=True)
    noto = sub.add_parser("noto", help="PNG bitmaps out of NotoColorEmoji.ttf")
    noto.add_argument("--font", type=Path, required=True)
    noto.add_argument("--out", type=Path, required=True)
    tw = sub.add_parser("twemoji", help="rasterise @twemoji/svg's SVGs")
    tw.add_argument("--svg-dir", type=Path, required=True)
    tw.add_argument("--out", type=Path, required=True)
    tw.add_argument("--size", type=int, default=256)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.source == "noto":
        n = extract_noto(args.font, args.out)
    else:
        n = rasterise_twemoji(args.svg_dir, args.out, args.size)
    print(f"{args.source}: {n} PNGs in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
