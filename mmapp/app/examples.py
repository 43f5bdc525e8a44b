"""Example images for the app: shape and object scenes like those the models were trained on, and
real photographs that ship in packages (``datasets/real_photos/photos.json``).

Scenes come from ``datasets/shapes_sample/images/test/`` and ``datasets/objects_sample/images/test/``
(jpg or png) when those folders exist; the photos are written once to a cache folder when the app is
built (never at import).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mmapp.atomic import atomic_path
from mmapp.data.objects.real_photos import load_photo, read_photo_specs

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHAPES_SAMPLE = REPO_ROOT / "datasets" / "shapes_sample" / "images" / "test"
OBJECTS_SAMPLE = REPO_ROOT / "datasets" / "objects_sample" / "images" / "test"
QUESTIONS = ("what is this?", "what animal is this?", "how many objects are there?", "is there a dog?",
             "what color is the circle?", "is the circle to the left of the star?")


def cache_dir() -> Path:
    """Where generated example files go: ``$MMAPP_CACHE/app-examples`` or ``~/.cache/mmapp/app-examples``."""
    root = os.environ.get("MMAPP_CACHE") or Path.home() / ".cache" / "mmapp"
    return Path(root) / "app-examples"


def scene_examples(folder: Path = SHAPES_SAMPLE, limit: int = 8) -> list[Path]:
    """Up to ``limit`` shape scenes (sorted by name); none when the folder is absent."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:limit]


def photo_examples(folder: Path | None = None) -> list[Path]:
    """The real photos of ``datasets/real_photos/photos.json`` whose package is installed, as PNG
    files in ``folder`` (written on first use, atomically); photos of things the models know first."""
    folder = folder or cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for spec in sorted(read_photo_specs(), key=lambda s: not s.known):
            path = folder / f"{spec.name}.png"
            if not path.is_file():
                try:
                    image = load_photo(spec)
                except LookupError:
                    continue  # its package is not installed
                with atomic_path(path) as tmp:
                    image.save(tmp, format="PNG")
            paths.append(path)
        return paths
    except Exception as e:  # noqa: BLE001 - examples are a convenience: the app works without them
        log.warning("real-photo examples unavailable (%s)", e)
        return []
