"""Pointing game and attention mass in box on hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmapp.errors import InputError
from mmapp.metrics.grounding import (GroundingScore, attention_mass_in_box, box_area_fraction, peak_point,
                                     pointing_hit, score_grounding, summarize_grounding, upsample_attention)


def _one_hot(h: int, w: int, i: int, j: int) -> np.ndarray:
    att = np.full((h, w), 0.01)
    att[i, j] = 1.0
    return att / att.sum()


def test_peak_point_is_argmax_cell_centre() -> None:
    att = _one_hot(4, 4, 1, 2)  # image 400 x 200: cells are 100 x 50 pixels
    assert peak_point(att, (400, 200)) == (250.0, 75.0)


def test_pointing_hit_and_miss() -> None:
    att = _one_hot(4, 4, 1, 2)
    assert pointing_hit(att, (400, 200), [200, 50, 100, 50])        # the peak cell's own box
    assert pointing_hit(att, (400, 200), [245, 70, 10, 10])           # a tiny box around the centre
    assert not pointing_hit(att, (400, 200), [0, 0, 100, 100])
    assert not pointing_hit(att, (400, 200), [260, 0, 100, 200])    # peak 10 px left of the box
    assert pointing_hit(att, (400, 200), [260, 0, 100, 200], tolerance=15)


def test_peak_agrees_with_upsampled_map_peak() -> None:
    # At an odd integer scale (7 -> 21 px) some pixel centres sit exactly on the cell centres,
    # so the bilinear map attains its maximum at the argmax cell's centre pixel (border cells
    # have a flat plateau there, so other pixels may tie).
    rng = np.random.default_rng(0)
    for _ in range(20):
        att = rng.random((7, 7))
        up = upsample_attention(att, (21, 21))
        px, py = peak_point(att, (21, 21))
        assert up[int(py), int(px)] == pytest.approx(up.max(), rel=1e-12)


def test_mass_of_uniform_map_is_area_fraction() -> None:
    att = np.full((7, 7), 1 / 49)
    assert attention_mass_in_box(att, (100, 50), [10, 10, 30, 20]) == pytest.approx(600 / 5000)
    assert box_area_fraction((100, 50), [10, 10, 30, 20]) == pytest.approx(0.12)
    assert attention_mass_in_box(att, (100, 50), [0, 0, 100, 50]) == pytest.approx(1.0)


def test_mass_of_one_hot_corner_map_closed_form() -> None:
    # 2x2 -> 4x4 bilinear (align_corners=False): cell 0 weighs (1, .75, .25, 0) along each axis,
    # total 2 x 2 = 4; the left half of the image holds (1 + .75) x 2 of it.
    att = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert attention_mass_in_box(att, (4, 4), [0, 0, 2, 4]) == pytest.approx(0.875)
    assert upsample_attention(att, (4, 4)).sum() == pytest.approx(1.0)


def test_score_grounding_accepts_tensors() -> None:
    att = torch.tensor(_one_hot(4, 4, 3, 0), dtype=torch.float32)
    s = score_grounding(att, (400, 200), [0, 150, 100, 50])
    assert s.hit and 0.5 < s.mass < 1 and s.area_fraction == pytest.approx(1 / 16)


def test_summary_overall_and_by_group() -> None:
    scores = [GroundingScore(True, 0.5, 0.1), GroundingScore(False, 0.1, 0.1), GroundingScore(True, 0.9, 0.2)]
    out = summarize_grounding(scores, groups=["colour", "shape", "colour"])
    assert out["n"] == 3 and out["hit_rate"] == pytest.approx(2 / 3) and out["mean_mass"] == pytest.approx(0.5)
    assert out["by_group"]["colour"] == pytest.approx({"n": 2, "hit_rate": 1.0, "mean_mass": 0.7, "chance": 0.15})
    assert out["by_group"]["shape"]["hit_rate"] == 0.0


@pytest.mark.parametrize("att, size, box", [
    (np.zeros((3, 3)), (10, 10), [0, 0, 5, 5]),
    (np.ones(9), (10, 10), [0, 0, 5, 5]),
    (-np.ones((3, 3)), (10, 10), [0, 0, 5, 5]),
    (np.ones((3, 3)), (0, 10), [0, 0, 5, 5]),
    (np.ones((3, 3)), (10, 10), [0, 0, -1, 5]),
])
def test_bad_inputs_refused(att, size, box) -> None:
    with pytest.raises(InputError):
        score_grounding(att, size, box)
