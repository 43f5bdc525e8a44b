"""Real photographs that ship inside installed packages, with the nouns that count as right.

The list is ``datasets/real_photos/photos.json``; each photo's ``loader`` is one of
``"module:function"`` (called with no arguments, e.g. ``skimage.data:chelsea``), a file path
inside an installed package whose first component is the import name
(``matplotlib/mpl-data/sample_data/grace_hopper.jpg``), or ``"BUNDLE.rcc!PATH"``: a file inside a
Qt resource bundle that a system package installs (GCompris's photographs,
``/usr/share/gcompris-qt/rcc/categorization.rcc!gcompris/src/.../tools/hammer1.webp``). A photo
whose package is missing is skipped with a reason, never downloaded. ``scripts/real_photos.py`` scores the models on them.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from mmapp.data.objects.qt_resources import read_resources
from mmapp.errors import DataError

PHOTOS = Path(__file__).resolve().parents[3] / "datasets" / "real_photos" / "photos.json"


@dataclass(frozen=True)
class PhotoSpec:
    name: str
    package: str
    loader: str
    nouns: tuple[str, ...]  # empty: a thing the vocabulary lacks
    licence: str
    note: str

    @property
    def known(self) -> bool:
        return bool(self.nouns)


def read_photo_specs(path: str | Path | None = None) -> list[PhotoSpec]:
    """The photo list (default: the committed one)."""
    path = Path(path) if path is not None else PHOTOS
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["photos"]
        return [PhotoSpec(r["name"], r["package"], r["loader"], tuple(r["nouns"]), r["licence"], r["note"])
                for r in records]
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a photo list ({type(e).__name__}: {e})") from None


def _package_root(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # finds a top-level package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def load_photo(spec: PhotoSpec) -> Image.Image:
    """The photo as an RGB image. Raises LookupError (message: why it is skipped) when its package
    or file is missing."""
    if "!" in spec.loader:
        bundle, inner = spec.loader.split("!", 1)
        if not Path(bundle).is_file():
            raise LookupError(f"skipped: {spec.package} not installed ({bundle} missing)")
        files = _bundle(str(Path(bundle).resolve()))
        if inner not in files:
            raise LookupError(f"skipped: {inner} not in {bundle}")
        with Image.open(io.BytesIO(files[inner])) as im:
            image = im.copy()
    elif ":" in spec.loader:
        module, function = spec.loader.split(":", 1)
        if importlib.util.find_spec(module.split(".")[0]) is None:
            raise LookupError(f"skipped: {spec.package} not installed")
        array = getattr(importlib.import_module(module), function)()
        image = Image.fromarray(np.asarray(array))
    else:
        module, _, relative = spec.loader.partition("/")
        root = _package_root(module)
        if root is None:
            raise LookupError(f"skipped: {spec.package} not installed")
        file = root / relative
        if not file.is_file():
            raise LookupError(f"skipped: {relative} not in the installed {spec.package}")
        with Image.open(file) as im:
            image = im.copy()
    return image.convert("RGB")


@functools.lru_cache(maxsize=4)
def _bundle(path: str) -> dict[str, bytes]:
    """A Qt resource bundle's files, read once however many photos come from it."""
    return read_resources(path)


def load_real_photos(path: str | Path | None = None,
                     skipped: list[tuple[PhotoSpec, str]] | None = None) -> list[tuple[PhotoSpec, Image.Image]]:
    """Every available photo of the list with its spec; the unavailable ones are left out and,
    with ``skipped``, appended there with the reason."""
    photos = []
    for spec in read_photo_specs(path):
        try:
            photos.append((spec, load_photo(spec)))
        except LookupError as e:
            if skipped is not None:
                skipped.append((spec, str(e)))
    return photos


def accepted_forms(nouns: Iterable[str], plurals: dict[str, str]) -> set[str]:
    """The nouns and their plurals (from the vocabulary's noun -> plural map)."""
    forms = set()
    for noun in nouns:
        forms.add(noun)
        if noun in plurals:
            forms.add(plurals[noun])
    return forms


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:[-'][a-z0-9]+)*", text.lower())


def names_thing(caption: str, forms: Iterable[str]) -> bool:
    """Whether the caption contains one of the forms as whole words ("a red cat" names "cat",
    "a catapult" does not; "polar bear" must appear as those two words in a row)."""
    tokens = words(caption)
    for form in forms:
        target = words(form)
        n = len(target)
        if n and any(tokens[i:i + n] == target for i in range(len(tokens) - n + 1)):
            return True
    return False
