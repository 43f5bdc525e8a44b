"""scripts/compare_grids.py: the subset files, the grounding-per-second figure and the verdict."""

from __future__ import annotations

import json

import pytest

from tests.support.scripts import load_script


@pytest.fixture(scope="module")
def cg():
    return load_script("compare_grids")


def _result(images_per_s: float, hit_rate: float, n: int = 1000, chance: float = 0.05) -> dict:
    pointing = {"n": n, "hit_rate": hit_rate, "mean_mass": 0.0, "chance": chance, "by_group": {}}
    return {"timing": {"images_per_s": images_per_s}, "eval": {"pointing": pointing},
            "grounding_per_s": images_per_s * (hit_rate - chance)}


def test_grounding_per_second_is_speed_times_gain_over_chance(cg):
    assert cg.grounding_per_second(10.0, {"hit_rate": 0.55, "chance": 0.05}) == pytest.approx(5.0)
    assert cg.grounding_per_second(10.0, None) is None


def test_verdict_prefers_fast_grid_when_pointing_is_close(cg):
    text = cg.verdict({"joined@224": _result(30.0, 0.80), "last@448": _result(10.0, 0.81)})
    assert text.startswith("**joined@224 grounds better")
    assert "within noise" in text
    assert "3.0x the above-chance grounded scenes" in text  # 30*0.75 / (10*0.76) = 2.96


def test_verdict_prefers_slow_grid_that_grounds_far_better(cg):
    text = cg.verdict({"joined@224": _result(12.0, 0.10), "last@448": _result(10.0, 0.80)})
    assert text.startswith("**last@448 grounds better")
    assert "also points better" in text


def test_verdict_notes_a_real_loss_in_pointing(cg):
    text = cg.verdict({"joined@224": _result(40.0, 0.60), "last@448": _result(10.0, 0.80)})
    assert text.startswith("**joined@224 grounds better")
    assert "although last@448 points better" in text


def test_no_verdict_below_chance(cg):
    text = cg.verdict({"joined@224": _result(40.0, 0.04), "last@448": _result(10.0, 0.05)})
    assert text.startswith("No verdict")


def test_write_subset_keeps_only_the_chosen_images(cg, tmp_path):
    ann = tmp_path / "data" / "annotations"
    ann.mkdir(parents=True)
    questions = [{"image_id": i, "question": f"q{i}{k}?", "question_id": i * 10 + k} for i in (1, 2, 3) for k in (0, 1)]
    (ann / "questions_val.json").write_text(json.dumps({"data_subtype": "val", "questions": questions}))
    anns = [{"question_id": q["question_id"], "image_id": q["image_id"]} for q in questions]
    (ann / "annotations_val.json").write_text(json.dumps({"data_subtype": "val", "annotations": anns}))
    q_path, a_path = cg.write_subset(tmp_path / "data", "val", {1, 3}, tmp_path / "out")
    q, a = json.loads(q_path.read_text()), json.loads(a_path.read_text())
    assert q["data_subtype"] == "val" and [r["question_id"] for r in q["questions"]] == [10, 11, 30, 31]
    assert [r["question_id"] for r in a["annotations"]] == [10, 11, 30, 31]
