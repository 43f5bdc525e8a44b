"""Procedural shape scenes: sampling (``sample_scene``) and rendering (``render_scene``).

A scene holds 1 to 6 flat shapes (6 kinds, 8 colours, 2 sizes) on a muted background (plain,
gradient or noise texture). Each object gets a small colour jitter, a mild linear or radial
brightness ramp and a slight rotation, so no single pixel answers a question, while a small
model on a 14x14 CNN grid (16-pixel cells at 224) can still learn it: a small object spans at
least one cell (radius >= 16 px at 224), a large one about twice that.

All geometry is in pixels of a ``scene.size`` x ``scene.size`` image; ``render_scene`` can
draw at another resolution by scaling it. Rendering is a pure function of the scene (noise
textures carry their own seed), so a scene always renders to the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "diamond")
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white")
SIZES: tuple[str, ...] = ("small", "large")

COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (240, 135, 20),
    "yellow": (235, 215, 40),
    "green": (50, 170, 60),
    "cyan": (40, 200, 210),
    "blue": (40, 80, 220),
    "purple": (135, 60, 190),
    "white": (240, 240, 240),
}
# Radius ranges in pixels at 224x224 (scaled with the image size); large is ~2x small.
RADIUS_RANGE: dict[str, tuple[float, float]] = {"small": (16.0, 20.0), "large": (30.0, 38.0)}
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noise")
MAX_OBJECTS = 6
MAX_BOX_OVERLAP = 0.12  # intersection / smaller box area, for every pair of objects
SUPERSAMPLE = 4  # anti-aliasing factor of the object masks

_CIRCLE_VERTICES = 48


def _unit_polygon(shape: str) -> np.ndarray:
    """(V, 2) vertices of a shape of "radius" 1 centred on the origin, y pointing down."""
    if shape == "circle":
        a = np.linspace(0, 2 * np.pi, _CIRCLE_VERTICES, endpoint=False)
        return np.stack([np.cos(a), np.sin(a)], 1)
    if shape == "square":
        h = 0.85
        return np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    if shape == "triangle":
        return np.array([[0.0, -0.95], [1.1, 0.95], [-1.1, 0.95]])
    if shape == "star":
        a = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.05, 0.45)
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    if shape == "hexagon":
        a = np.arange(6) * np.pi / 3
        return np.stack([np.cos(a), np.sin(a)], 1)
    if shape == "diamond":
        return np.array([[0.0, -1.0], [0.7, 0.0], [0.0, 1.0], [-0.7, 0.0]])
    raise ValueError(f"unknown shape {shape!r}")


def _polygon_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


@dataclass(frozen=True)
class ShapeObject:
    """One object. ``center``/``radius`` in pixels; ``rotation`` in degrees; ``rgb`` is the
    jittered fill colour; ``shade`` = (kind 0 linear / 1 radial, direction radians, amplitude)."""

    shape: str
    color: str
    size: str
    center: tuple[float, float]
    radius: float
    rotation: float = 0.0
    rgb: tuple[int, int, int] = (0, 0, 0)
    shade: tuple[int, float, float] = (0, 0.0, 0.0)

    def polygon(self, scale: float = 1.0) -> np.ndarray:
        """(V, 2) outline vertices in pixels (x, y), at ``scale`` times the scene resolution."""
        p = _unit_polygon(self.shape) * self.radius
        if self.rotation and self.shape != "circle":
            t = math.radians(self.rotation)
            rot = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
            p = p @ rot
        return (p + np.asarray(self.center)) * scale

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """Tight COCO box ``[x, y, w, h]`` in pixels (rounded to 0.01)."""
        p = self.polygon()
        x0, y0 = p.min(0)
        x1, y1 = p.max(0)
        return (round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2))

    @property
    def area(self) -> float:
        """Area of the outline polygon in square pixels (COCO ``area``)."""
        return round(_polygon_area(self.polygon()), 2)


@dataclass(frozen=True)
class Background:
    """``kind`` in BACKGROUNDS; ``colors`` one (plain) or two (gradient, noise) RGB triples;
    ``angle`` the gradient direction (radians); ``seed`` the noise texture's seed."""

    kind: str
    colors: tuple[tuple[int, int, int], ...]
    angle: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class Scene:
    """A ``size`` x ``size`` scene: a background and its objects in drawing order."""

    size: int
    background: Background
    objects: tuple[ShapeObject, ...]


def _muted_rgb(rng: np.random.Generator) -> tuple[int, int, int]:
    """A grey-ish colour (saturation <= 0.18, value 60..150) that no object colour resembles."""
    value = rng.uniform(60, 150)
    tint = rng.uniform(-1, 1, 3)
    tint -= tint.mean()
    rgb = value * (1 + 0.18 * tint / max(np.abs(tint).max(), 1e-6))
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


def _sample_background(rng: np.random.Generator) -> Background:
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    colors = (_muted_rgb(rng),) if kind == "plain" else (_muted_rgb(rng), _muted_rgb(rng))
    return Background(kind, colors, float(rng.uniform(0, 2 * np.pi)), int(rng.integers(2**31)))


def _sample_attributes(rng: np.random.Generator, n: int) -> list[tuple[str, str, str]]:
    """(shape, color, size) for n objects; ~35 % of multi-object scenes repeat a shape
    (half of those also its colour) 2-3 times so counting questions get answers above 1."""
    attrs = [(SHAPES[rng.integers(len(SHAPES))], COLORS[rng.integers(len(COLORS))],
              SIZES[rng.integers(len(SIZES))]) for _ in range(n)]
    if n >= 2 and rng.random() < 0.35:
        k = int(rng.integers(2, min(3, n) + 1))
        shape, color = attrs[0][0], attrs[0][1]
        same_color = rng.random() < 0.5
        for i in range(1, k):
            attrs[i] = (shape, color if same_color else attrs[i][1], attrs[i][2])
        order = rng.permutation(n)
        attrs = [attrs[i] for i in order]
    return attrs


def _box_overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection area over the smaller box's area, boxes as [x, y, w, h]."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / min(a[2] * a[3], b[2] * b[3])


def _place(rng: np.random.Generator, attrs: list[tuple[str, str, str]], size: int,
           tries: int = 60) -> list[ShapeObject] | None:
    scale = size / 224.0
    placed: list[ShapeObject] = []
    boxes: list[tuple[float, float, float, float]] = []
    for shape, color, sz in attrs:
        lo, hi = RADIUS_RANGE[sz]
        radius = float(rng.uniform(lo, hi)) * scale
        rotation = float(rng.uniform(-15, 15)) if shape != "circle" else 0.0
        base = np.asarray(COLOR_RGB[color], float)
        rgb = tuple(int(v) for v in np.clip(base + rng.uniform(-10, 10, 3), 0, 255))
        shade = (int(rng.integers(2)), float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.06, 0.15)))
        margin = float(np.linalg.norm(_unit_polygon(shape), axis=1).max()) * radius + 2  # any rotation
        for _ in range(tries):
            c = (round(float(rng.uniform(margin, size - margin)), 2),
                 round(float(rng.uniform(margin, size - margin)), 2))
            obj = ShapeObject(shape, color, sz, c, round(radius, 3), round(rotation, 2), rgb, shade)
            box = obj.bbox
            if all(_box_overlap(box, b) <= MAX_BOX_OVERLAP for b in boxes):
                placed.append(obj)
                boxes.append(box)
                break
        else:
            return None
    return placed


def sample_scene(rng: np.random.Generator, size: int = 224) -> Scene:
    """A random scene of 1..6 objects (uniform count) on a random background.

    Positions are resampled until no two boxes overlap by more than MAX_BOX_OVERLAP of the
    smaller one; a scene that cannot be placed is redrawn (after 8 tries, all objects small).
    """
    if size < 64:
        raise ValueError(f"scene size must be >= 64 pixels, got {size}")
    background = _sample_background(rng)
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    attrs = _sample_attributes(rng, n)
    for attempt in range(1000):
        if attempt >= 8:
            attrs = [(s, c, "small") for s, c, _ in attrs]
        placed = _place(rng, attrs, size)
        if placed is not None:
            return Scene(size, background, tuple(placed))
    raise RuntimeError("could not place the objects of a scene")  # unreachable in practice


def _render_background(bg: Background, size: int) -> np.ndarray:
    """(size, size, 3) uint8 background. Gradients and noise blobs are drawn on a coarse grid
    and upsampled (bilinear interpolation of a linear ramp is exact), which is much cheaper."""
    c0 = np.asarray(bg.colors[0], np.float32)
    if bg.kind == "plain":
        return np.broadcast_to(c0.round().astype(np.uint8), (size, size, 3)).copy()
    c1 = np.asarray(bg.colors[1], np.float32)
    if bg.kind == "gradient":
        g = 16
        u = (np.arange(g, dtype=np.float32) + 0.5) / g - 0.5
        t = math.cos(bg.angle) * u[None, :] + math.sin(bg.angle) * u[:, None]  # (g, g)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        small = (c0 + (c1 - c0) * t[..., None]).round().astype(np.uint8)
        return np.asarray(Image.fromarray(small, "RGB").resize((size, size), Image.BILINEAR)).copy()
    rng = np.random.default_rng(bg.seed)
    t = rng.random((6, 6, 1), dtype=np.float32)
    small = (c0 + (c1 - c0) * t).round().astype(np.uint8)
    blobs = np.asarray(Image.fromarray(small, "RGB").resize((size, size), Image.BICUBIC), np.int16)
    fine = rng.integers(-10, 11, (size, size, 1), dtype=np.int16)  # grain
    return np.clip(blobs + fine, 0, 255).astype(np.uint8)


def _draw_object(canvas: np.ndarray, obj: ShapeObject, scale: float) -> None:
    """Alpha-composite one anti-aliased, shaded object onto canvas (H, W, 3) uint8 in place."""
    h, w = canvas.shape[:2]
    poly = obj.polygon(scale)
    x0 = max(int(math.floor(poly[:, 0].min())) - 1, 0)
    y0 = max(int(math.floor(poly[:, 1].min())) - 1, 0)
    x1 = min(int(math.ceil(poly[:, 0].max())) + 2, w)
    y1 = min(int(math.ceil(poly[:, 1].max())) + 2, h)
    if x1 <= x0 or y1 <= y0:
        return
    ss = SUPERSAMPLE
    mask = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    draw = ImageDraw.Draw(mask)
    if obj.shape == "circle":
        cx, cy = (obj.center[0] * scale - x0) * ss, (obj.center[1] * scale - y0) * ss
        r = obj.radius * scale * ss
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        pts = [((x - x0) * ss, (y - y0) * ss) for x, y in poly]
        draw.polygon(pts, fill=255)
    alpha = np.asarray(mask.reduce(ss), np.float32)[..., None] / 255.0  # (h, w, 1)
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - obj.center[1] * scale) / (obj.radius * scale)
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - obj.center[0] * scale) / (obj.radius * scale)
    kind, angle, amp = obj.shade
    if kind == 0:  # linear ramp across the object
        t = math.cos(angle) * xs[None, :] + math.sin(angle) * ys[:, None]
    else:  # radial highlight, offset towards `angle`
        dx = xs[None, :] - 0.35 * math.cos(angle)
        dy = ys[:, None] - 0.35 * math.sin(angle)
        t = 0.8 - np.sqrt(dx * dx + dy * dy)
    factor = 1.0 + amp * np.clip(t, -1.0, 1.0)
    color = np.asarray(obj.rgb, np.float32) * factor[..., None]  # (h, w, 3)
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    region += alpha * (color - region)
    canvas[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)


def render_scene(scene: Scene, size: int | None = None) -> Image.Image:
    """Draw a scene as an RGB ``size`` x ``size`` PIL image (default: ``scene.size``)."""
    size = scene.size if size is None else int(size)
    scale = size / scene.size
    canvas = _render_background(scene.background, size)
    for obj in scene.objects:
        _draw_object(canvas, obj, scale)
    return Image.fromarray(canvas, "RGB")


def present_objects(scene: Scene) -> list[tuple[str, str]]:
    """(color, shape) of every object in the scene, in drawing order (duplicates kept)."""
    return [(o.color, o.shape) for o in scene.objects]
