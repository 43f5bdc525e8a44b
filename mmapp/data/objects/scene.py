"""Scenes of real objects: photographs cut out on transparent backgrounds, pasted on backgrounds.

A scene holds 1 to 4 cut-outs (``CutOutPool``: the source images of one split, with their nouns)
at random scale and position, boxes overlapping little (``MAX_BOX_OVERLAP``), each maybe flipped and
mildly colour-jittered, on a background: a plain or gradient colour, a noise texture, or a tinted
crop of a texture photo (scikit-image's grass, gravel, brick). One-object scenes are drawn large
(like a photo of one thing), crowded ones smaller.

Sampling (``sample_scene``) draws the class first, uniformly over the pool's classes, then one of
its source images (a photograph twice as often as the three emoji drawings of one thing
together), so every class is seen about equally often however many pictures it has.
Rendering (``render_scene``) is a pure function of the scene and the pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

MAX_OBJECTS = 4
OBJECT_COUNT_WEIGHTS = (0.4, 0.25, 0.2, 0.15)  # scenes with 1, 2, 3, 4 objects
MAX_BOX_OVERLAP = 0.15  # intersection / smaller box area, for every pair of objects
# Longer side of a cut-out as a fraction of the image side, by number of objects in the scene.
SCALE_RANGE: dict[int, tuple[float, float]] = {1: (0.45, 0.95), 2: (0.28, 0.55), 3: (0.24, 0.45), 4: (0.22, 0.4)}
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noise", "texture")
TEXTURES: tuple[str, ...] = ("grass", "gravel", "brick")


# A class's images are drawn in proportion to these weights: a photograph twice as often as one
# emoji design, whose three artists' pictures (Fluent 3D, Noto, Twemoji) share that design's weight.
PHOTO_WEIGHT = 2.0
RENDER_WEIGHT = 1.0 / 3


@dataclass(frozen=True)
class CutOut:
    """One source image: ``image`` RGBA cropped to its opaque pixels; ``key`` names its file;
    ``photo``: a photograph (not an emoji render or drawing)."""

    key: str
    noun: str
    plural: str
    supercategory: str
    image: Image.Image
    photo: bool = True


class CutOutPool:
    """The cut-outs a split may draw, grouped by noun (sorted, so sampling is reproducible)."""

    def __init__(self, cutouts: Sequence[CutOut]) -> None:
        if not cutouts:
            raise ValueError("an empty cut-out pool")
        self.cutouts = list(cutouts)
        by_noun: dict[str, list[int]] = {}
        for i, c in enumerate(self.cutouts):
            by_noun.setdefault(c.noun, []).append(i)
        self.nouns = sorted(by_noun)
        self.by_noun = {n: sorted(by_noun[n], key=lambda i: self.cutouts[i].key) for n in self.nouns}
        weights = {n: np.array([PHOTO_WEIGHT if self.cutouts[i].photo else RENDER_WEIGHT for i in m])
                   for n, m in self.by_noun.items()}
        self.image_p = {n: w / w.sum() for n, w in weights.items()}  # per class: P(each of its images)

    def draw(self, rng: np.random.Generator) -> int:
        """A cut-out index: a class uniformly, then one of its images (by PHOTO_WEIGHT and
        RENDER_WEIGHT)."""
        noun = self.nouns[int(rng.integers(len(self.nouns)))]
        members = self.by_noun[noun]
        return members[int(rng.choice(len(members), p=self.image_p[noun]))]


@dataclass(frozen=True)
class PlacedObject:
    """A cut-out in a scene: ``box`` (x, y, w, h) in pixels of the scene; ``jitter`` = (brightness,
    contrast, saturation) factors; ``area`` its opaque pixels (the size "bigger" compares)."""

    cutout: int
    noun: str
    supercategory: str
    box: tuple[int, int, int, int]
    flip: bool
    jitter: tuple[float, float, float]
    area: float

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return (x + w / 2, y + h / 2)


@dataclass(frozen=True)
class Background:
    """``kind`` in BACKGROUNDS; ``colors`` one or two RGB triples; ``angle`` the gradient direction;
    ``seed`` of the noise; ``texture`` name, crop ``offset`` (fractions) and ``blur`` radius."""

    kind: str
    colors: tuple[tuple[int, int, int], ...]
    angle: float = 0.0
    seed: int = 0
    texture: str = ""
    offset: tuple[float, float] = (0.0, 0.0)
    blur: float = 0.0


@dataclass(frozen=True)
class ObjectScene:
    size: int
    background: Background
    objects: tuple[PlacedObject, ...]


def _rgb(rng: np.random.Generator, lo: int = 40, hi: int = 220) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))  # type: ignore[return-value]


def _sample_background(rng: np.random.Generator) -> Background:
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    colors = (_rgb(rng), _rgb(rng))
    if kind == "texture":
        return Background(kind, colors[:1], texture=TEXTURES[int(rng.integers(len(TEXTURES)))],
                          offset=(float(rng.random()), float(rng.random())),
                          blur=float(rng.choice([0.0, 0.0, 1.5, 3.0])))
    return Background(kind, colors[:1] if kind == "plain" else colors, angle=float(rng.uniform(0, 2 * np.pi)),
                      seed=int(rng.integers(2**31)))


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / max(1, min(a[2] * a[3], b[2] * b[3]))


def _opaque_fraction(image: Image.Image) -> float:
    alpha = np.asarray(image.getchannel("A"), dtype=np.float32)
    return float(alpha.mean() / 255.0)


def sample_scene(rng: np.random.Generator, pool: CutOutPool, size: int = 448) -> ObjectScene:
    """A random scene of 1 to 4 cut-outs from ``pool`` (distinct source images)."""
    n = 1 + int(rng.choice(MAX_OBJECTS, p=OBJECT_COUNT_WEIGHTS))
    background = _sample_background(rng)
    lo, hi = SCALE_RANGE[n]
    placed: list[PlacedObject] = []
    used: set[int] = set()
    for _ in range(n):
        for _attempt in range(30):
            k = pool.draw(rng)
            if k in used:
                continue
            cut = pool.cutouts[k]
            w0, h0 = cut.image.size
            side = rng.uniform(lo, hi) * size
            scale = side / max(w0, h0)
            w, h = max(8, int(round(w0 * scale))), max(8, int(round(h0 * scale)))
            if w > size or h > size:
                continue
            box = (int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1)), w, h)
            if any(_overlap(box, p.box) > MAX_BOX_OVERLAP for p in placed):
                continue
            jitter = (float(rng.uniform(0.8, 1.2)), float(rng.uniform(0.85, 1.15)), float(rng.uniform(0.8, 1.2)))
            area = round(_opaque_fraction(cut.image) * w * h, 1)
            placed.append(PlacedObject(k, cut.noun, cut.supercategory, box, bool(rng.random() < 0.5), jitter, area))
            used.add(k)
            break
    if not placed:  # the pool's images are all too large to place: cannot happen with SCALE_RANGE <= 1
        raise RuntimeError("could not place any object")
    return ObjectScene(size, background, tuple(placed))


def _render_background(bg: Background, size: int, textures: dict[str, Image.Image]) -> Image.Image:
    if bg.kind == "plain":
        return Image.new("RGB", (size, size), bg.colors[0])
    if bg.kind == "texture":
        tex = textures[bg.texture]
        crop = min(tex.size)  # a square crop, at least 60 % of the texture's shorter side
        side = int(crop * (0.6 + 0.4 * bg.offset[0]))
        x = int((tex.size[0] - side) * bg.offset[0])
        y = int((tex.size[1] - side) * bg.offset[1])
        grey = np.asarray(tex.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR),
                          dtype=np.float32) / 255.0  # (S, S)
        tint = np.asarray(bg.colors[0], dtype=np.float32) / 255.0
        out = Image.fromarray(np.clip((0.35 + 0.9 * grey[..., None]) * tint * 255, 0, 255).astype(np.uint8), "RGB")
        return out.filter(ImageFilter.GaussianBlur(bg.blur)) if bg.blur else out
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1)
    if bg.kind == "gradient":
        t = (np.cos(bg.angle) * (xx - 0.5) + np.sin(bg.angle) * (yy - 0.5)) / np.sqrt(0.5) + 0.5
    else:  # noise: smooth random blobs
        small = np.random.default_rng(bg.seed).random((8, 8)).astype(np.float32)
        t = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC),
                       dtype=np.float32) / 255.0
    t = np.clip(t, 0, 1)[..., None]
    a, b = (np.asarray(c, dtype=np.float32) for c in bg.colors)
    return Image.fromarray((a * (1 - t) + b * t).astype(np.uint8), "RGB")


def render_scene(scene: ObjectScene, pool: CutOutPool, textures: dict[str, Image.Image]) -> Image.Image:
    """The scene as an RGB image of ``scene.size`` pixels; ``textures`` maps TEXTURES names to
    greyscale images (``load_textures``)."""
    canvas = _render_background(scene.background, scene.size, textures)
    for obj in scene.objects:
        x, y, w, h = obj.box
        im = pool.cutouts[obj.cutout].image.resize((w, h), Image.LANCZOS)
        if obj.flip:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        alpha = im.getchannel("A")
        rgb = im.convert("RGB")
        b, c, s = obj.jitter
        rgb = ImageEnhance.Color(ImageEnhance.Contrast(ImageEnhance.Brightness(rgb).enhance(b)).enhance(c)).enhance(s)
        canvas.paste(rgb, (x, y), alpha)
    return canvas


def load_textures() -> dict[str, Image.Image]:
    """The texture photos that ship with scikit-image (no download), as greyscale images."""
    import skimage.data  # heavy: scikit-image

    return {name: Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("L") for name in TEXTURES}
