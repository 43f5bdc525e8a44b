"""Scene sampling and rendering of the procedural shapes generator."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mmapp.data.shapes.scene import (COLOR_RGB, COLORS, MAX_BOX_OVERLAP, RADIUS_RANGE, SHAPES, SIZES,
                               _box_overlap, present_objects, render_scene, sample_scene)


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(123)
    return [sample_scene(rng) for _ in range(400)]


def test_constants():
    assert len(SHAPES) >= 6 and len(set(SHAPES)) == len(SHAPES)
    assert len(COLORS) >= 8 and set(COLORS) == set(COLOR_RGB)
    assert SIZES == ("small", "large")
    rgb = np.array([COLOR_RGB[c] for c in COLORS], float)
    dist = np.sqrt(((rgb[:, None] - rgb[None]) ** 2).sum(-1)) + np.eye(len(COLORS)) * 1e9
    assert dist.min() > 80, "two object colours are too close"


def test_object_counts_are_uniformish_and_attributes_valid(scenes):
    counts = Counter(len(s.objects) for s in scenes)
    assert set(counts) == set(range(1, 7))
    assert min(counts.values()) > len(scenes) / 6 * 0.6
    for s in scenes:
        for o in s.objects:
            assert o.shape in SHAPES and o.color in COLORS and o.size in SIZES
            lo, hi = RADIUS_RANGE[o.size]
            assert lo <= o.radius <= hi
    used = Counter((o.shape, o.color) for s in scenes for o in s.objects)
    assert {sh for sh, _ in used} == set(SHAPES) and {c for _, c in used} == set(COLORS)


def test_repeated_shapes_are_common(scenes):
    multi = [s for s in scenes if len(s.objects) >= 2]
    repeated = [s for s in multi if len({o.shape for o in s.objects}) < len(s.objects)]
    assert len(repeated) / len(multi) > 0.3


def test_boxes_inside_image_and_overlap_limited(scenes):
    for s in scenes:
        boxes = [o.bbox for o in s.objects]
        for x, y, w, h in boxes:
            assert x >= 0 and y >= 0 and w > 0 and h > 0
            assert x + w <= s.size and y + h <= s.size
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                assert _box_overlap(boxes[i], boxes[j]) <= MAX_BOX_OVERLAP + 1e-9
    # a small object still covers a 16-pixel grid cell; a large one is about twice as big
    small = [o.bbox for s in scenes for o in s.objects if o.size == "small"]
    large = [o.bbox for s in scenes for o in s.objects if o.size == "large"]
    assert min(min(w, h) for _, _, w, h in small) >= 16
    ratio = np.mean([w * h for *_, w, h in large]) / np.mean([w * h for *_, w, h in small])
    assert 3.0 < ratio < 5.0  # area ratio of a ~2x linear size


def test_same_generator_state_same_scene_and_pixels():
    a = sample_scene(np.random.default_rng(7))
    b = sample_scene(np.random.default_rng(7))
    c = sample_scene(np.random.default_rng(8))
    assert a == b and a != c
    assert np.array_equal(np.asarray(render_scene(a)), np.asarray(render_scene(b)))
    assert not np.array_equal(np.asarray(render_scene(a)), np.asarray(render_scene(c)))


def test_objects_are_drawn_where_they_are(scenes):
    """The centre pixel of an unoccluded solid object has (about) its colour; the background
    far from every object does not look like any object colour."""
    checked = 0
    for s in scenes[:80]:
        img = np.asarray(render_scene(s), float)
        assert img.shape == (s.size, s.size, 3)
        for k, o in enumerate(s.objects):
            if o.shape == "star":
                continue
            later = s.objects[k + 1:]
            cx, cy = o.center
            if any(_box_overlap((cx - 3, cy - 3, 6, 6), p.bbox) > 0 for p in later):
                continue
            pixel = img[int(cy), int(cx)]
            nearest = min(COLORS, key=lambda c: np.abs(np.asarray(COLOR_RGB[c]) - pixel).sum())
            assert nearest == o.color, (o, pixel)
            checked += 1
    assert checked > 100


def test_render_at_another_size_scales_geometry():
    scene = sample_scene(np.random.default_rng(3))
    small, big = render_scene(scene), render_scene(scene, 448)
    assert small.size == (224, 224) and big.size == (448, 448)
    down = np.asarray(big.resize((224, 224)), float)
    assert np.abs(down - np.asarray(small, float)).mean() < 12


def test_larger_scene_scales_radii():
    scene = sample_scene(np.random.default_rng(5), size=448)
    for o in scene.objects:
        lo, hi = RADIUS_RANGE[o.size]
        assert 2 * lo <= o.radius <= 2 * hi
    assert len(present_objects(scene)) == len(scene.objects)
    with pytest.raises(ValueError):
        sample_scene(np.random.default_rng(0), size=32)
