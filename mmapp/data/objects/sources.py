"""Real-object cut-outs: where the source packages live, the committed vocabulary, loading cut-outs.

Four packages supply photographs and renders of single objects on transparent backgrounds
(docs/objects.md, "Sources and licences"); none is a Python dependency, and nothing here reads
a file at import time:

- Debian ``tuxpaint-stamps-default`` (GPL-2): real-photo cut-outs, PNG with alpha;
- npm ``@lobehub/fluent-emoji-3d`` 1.1.0 (MIT): Microsoft's shaded 3D renders, 256x256 RGBA WebP;
- Debian ``fonts-noto-color-emoji`` (images Apache-2.0): Google's Noto drawings of the same emoji,
  read out of the font into PNGs by ``scripts/extract_emoji_images.py``;
- npm ``@twemoji/svg`` 15.0.0 (graphics CC-BY 4.0): Twitter's Twemoji drawings, rasterised to PNGs
  by the same script.

The emoji sets are three artists' pictures of one thing ("dog" drawn three ways), so a class
that had one render now has three, and one of them can be held out of training.
``vocabulary.tsv`` (written by ``scripts/build_object_vocabulary.py``) names each usable image:
its noun, plural and one of ``SUPERCATEGORIES``.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from mmapp.errors import InputError
from mmapp.words import plural

# Each is a natural word for "what <supercategory> is this?" and, with its plural, for captions.
SUPERCATEGORIES: tuple[str, ...] = (
    "animal", "bird", "sea animal", "insect", "fruit", "vegetable", "food", "drink", "plant",
    "person", "vehicle", "building", "outdoor object", "tool", "instrument", "clothing item",
    "household item", "sports item", "toy",
)
SUPERCATEGORY_PLURALS: dict[str, str] = {s: plural(s) for s in SUPERCATEGORIES}

VOCABULARY = Path(__file__).with_name("vocabulary.tsv")
_INSTALL_SCRIPT = "bash scripts/install_object_sources.sh"


@dataclass(frozen=True)
class Source:
    """A package of source images: ``name`` (as the vocabulary's ``source`` column spells it), the
    folder it installs to, the files its folder holds (``pattern``), the package and the command named
    when it is missing, what its folder holds (``label``, for ``--help``) and whether its images are
    photographs (else renders or drawings). ``env`` names the variable that points elsewhere."""

    name: str
    default_dir: str
    pattern: str
    package: str
    install: str
    label: str
    photo: bool = False

    @property
    def env(self) -> str:
        return f"MMAPP_{self.name.upper()}_DIR"


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("tuxpaint", "/usr/share/tuxpaint/stamps", "*/**/*.png", "Debian package tuxpaint-stamps-default",
           "sudo apt-get install tuxpaint-stamps-default", "Tux Paint stamps", photo=True),
    Source("emoji", "~/.cache/mmapp/fluent-emoji-3d/package/assets", "*.webp",
           "npm package @lobehub/fluent-emoji-3d 1.1.0", _INSTALL_SCRIPT, "fluent-emoji-3d assets"),
    Source("noto", "~/.cache/mmapp/noto-emoji", "*.png",
           "Noto emoji PNGs (Debian package fonts-noto-color-emoji, extracted)", _INSTALL_SCRIPT, "Noto emoji PNGs"),
    Source("twemoji", "~/.cache/mmapp/twemoji", "*.png",
           "Twemoji PNGs (npm package @twemoji/svg 15.0.0, rasterised)", _INSTALL_SCRIPT, "Twemoji PNGs"),
)}
ALPHA_MIN = 8  # alpha above this counts as part of the object


@dataclass(frozen=True)
class VocabEntry:
    """One source image: ``key`` is its path under the source's folder."""

    source: str
    key: str
    noun: str
    plural: str
    supercategory: str


@dataclass(frozen=True)
class SourceDirs:
    """The source folders found; None for a source not asked for."""

    tuxpaint: Path | None
    emoji: Path | None
    noto: Path | None = None
    twemoji: Path | None = None

    def root(self, source: str) -> Path:
        folder = getattr(self, source) if source in SOURCES else None
        if folder is None:
            raise InputError(f"no folder for source {source!r}: call find_sources(need=(..., {source!r}))")
        return folder


def read_vocabulary(path: str | Path | None = None) -> list[VocabEntry]:
    """The vocabulary TSV (default: the committed one) as entries, in file order."""
    path = Path(path) if path is not None else VOCABULARY
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header != ["source", "key", "noun", "plural", "supercategory"]:
            raise InputError(f"{path}: bad header {header!r}")
        entries = []
        for line, row in enumerate(reader, start=2):
            if len(row) != 5 or not all(row):
                raise InputError(f"{path}:{line}: expected 5 non-empty tab-separated fields, got {row!r}")
            entry = VocabEntry(*row)
            if entry.source not in SOURCES:
                raise InputError(f"{path}:{line}: unknown source {entry.source!r}")
            if entry.supercategory not in SUPERCATEGORIES:
                raise InputError(f"{path}:{line}: unknown supercategory {entry.supercategory!r}")
            entries.append(entry)
    return entries


def find_sources(tuxpaint: str | Path | None = None, emoji: str | Path | None = None,
                 noto: str | Path | None = None, twemoji: str | Path | None = None,
                 need: tuple[str, ...] = tuple(SOURCES)) -> SourceDirs:
    """The source folders: argument, else ``Source.env`` (``MMAPP_TUXPAINT_DIR``, ...), else
    ``Source.default_dir``. Raises InputError naming the missing package and the command that
    installs it."""
    given = {"tuxpaint": tuxpaint, "emoji": emoji, "noto": noto, "twemoji": twemoji}
    found: dict[str, Path | None] = dict.fromkeys(SOURCES)
    for name in need:
        if name not in SOURCES:
            raise InputError(f"unknown source {name!r} (known: {', '.join(SOURCES)})")
        source = SOURCES[name]
        folder = Path(os.path.expanduser(str(given[name] or os.environ.get(source.env) or source.default_dir)))
        if not (folder.is_dir() and any(folder.glob(source.pattern))):
            raise InputError(f"{source.package} not found in {folder}: install it with "
                             f"`{source.install}` (or set {source.env})")
        found[name] = folder
    return SourceDirs(**found)


def load_cutout(entry: VocabEntry, dirs: SourceDirs, max_side: int = 256) -> Image.Image:
    """The entry's image as RGBA, cropped to its opaque box (alpha > 8) and downscaled (LANCZOS)
    so that its longer side is at most ``max_side``. Refuses an image with no opaque pixel."""
    path = dirs.root(entry.source) / entry.key
    try:
        with Image.open(path) as im:
            image = im.convert("RGBA")
    except FileNotFoundError:
        raise InputError(f"{entry.source} image {entry.key} not found in {dirs.root(entry.source)}: "
                         f"reinstall with `{SOURCES[entry.source].install}`") from None
    alpha = np.asarray(image)[..., 3]  # (H, W)
    ys, xs = np.nonzero(alpha > ALPHA_MIN)
    if len(ys) == 0:
        raise InputError(f"{entry.source} image {entry.key} has no opaque pixel")
    image = image.crop((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    scale = max_side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.LANCZOS)
    return image


def load_cutouts(entries: Iterable[VocabEntry], dirs: SourceDirs, max_side: int = 256,
                 progress: bool = True) -> list[tuple[VocabEntry, Image.Image]]:
    """``load_cutout`` for each entry, with a progress bar."""
    from tqdm import tqdm

    entries = list(entries)
    return [(e, load_cutout(e, dirs, max_side))
            for e in tqdm(entries, desc="cut-outs", unit="image", disable=not progress)]


def class_table(entries: Iterable[VocabEntry]) -> dict[str, dict[str, int]]:
    """supercategory -> {noun: number of source images}; supercategories in ``SUPERCATEGORIES``
    order, nouns sorted."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for e in entries:
        counts[e.supercategory][e.noun] = counts[e.supercategory].get(e.noun, 0) + 1
    order = {s: i for i, s in enumerate(SUPERCATEGORIES)}
    return {s: dict(sorted(counts[s].items())) for s in sorted(counts, key=lambda s: (order.get(s, len(order)), s))}
