"""Example images for the app: shape scenes the models were trained on, and real photos they were not.

Scenes come from ``datasets/shapes_sample/images/test/`` (jpg or png) when that folder exists; the photos are
scikit-image's bundled ones, written once to a cache folder when the app is built (never at import).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mmapp.atomic import atomic_path

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHAPES_SAMPLE = REPO_ROOT / "datasets" / "shapes_sample" / "images" / "test"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
QUESTIONS = ("what color is the circle?", "how many objects are there?", "is there a red square?",
             "what shape is the blue object?", "is the circle to the left of the star?")


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
    """scikit-image's photos as PNG files in ``folder`` (written on first use, atomically)."""
    folder = folder or cache_dir()
    try:
        from PIL import Image
        from skimage import data

        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in PHOTOS:
            path = folder / f"{name}.png"
            if not path.is_file():
                with atomic_path(path) as tmp:
                    Image.fromarray(getattr(data, name)()).convert("RGB").save(tmp)
            paths.append(path)
        return paths
    except Exception as e:  # noqa: BLE001 - examples are a convenience: the app works without them
        log.warning("real-photo examples unavailable (%s)", e)
        return []
