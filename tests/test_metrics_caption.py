"""Caption metrics: same numbers as pycocoevalcap's own tokenizer + scorers, the no-Java path,
and validation of COCO results files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mmapp.errors import DataError
from mmapp.metrics import caption_metrics
from mmapp.metrics.caption_metrics import ptb_tokenize, python_tokenize, score_captions, score_results_file

FIX = Path(__file__).parent / "fixtures_metrics"
RESULTS, ANNOTATIONS = FIX / "caption_results_tiny.json", FIX / "coco_captions_tiny.json"
SCORED = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java is needed for PTB and METEOR")


def _fixture_refs_and_results() -> tuple[dict[int, list[str]], dict[int, str]]:
    refs: dict[int, list[str]] = {}
    for ann in json.loads(ANNOTATIONS.read_text())["annotations"]:
        refs.setdefault(ann["image_id"], []).append(ann["caption"])
    res = {r["image_id"]: r["caption"] for r in json.loads(RESULTS.read_text())}
    return refs, res


@pytest.fixture(scope="module")
def toolkit_scores() -> dict:
    """COCOEvalCap.evaluate's steps, called directly on the toolkit (no SPICE)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from pycocoevalcap.tokenizer import ptbtokenizer

    jar_dir = Path(ptbtokenizer.__file__).parent
    if not os.access(jar_dir, os.W_OK):
        pytest.skip(f"the toolkit's own PTBTokenizer writes a temp file into {jar_dir}, which is read-only")
    refs, res = _fixture_refs_and_results()
    gts = PTBTokenizer().tokenize({i: [{"caption": c} for c in refs[i]] for i in res})
    cands = PTBTokenizer().tokenize({i: [{"caption": res[i]}] for i in res})
    overall, per_image = {}, {i: {} for i in gts}
    for scorer, names in [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]), (Meteor(), ["METEOR"]),
                          (Rouge(), ["ROUGE_L"]), (Cider(), ["CIDEr"])]:
        score, scores = scorer.compute_score(gts, cands)
        if len(names) == 1:
            score, scores = [score], [scores]
        for name, sc, scs in zip(names, score, scores):
            overall[name] = sc
            for i, s in zip(gts.keys(), scs):
                per_image[i][name] = s
    return {"overall": overall, "per_image": per_image, "tokens": (gts, cands)}


@pytest.fixture(scope="module")
def ours() -> dict:
    return score_results_file(RESULTS, ANNOTATIONS)


@needs_java
def test_same_scores_as_toolkit(ours: dict, toolkit_scores: dict) -> None:
    for name in SCORED:
        assert ours["overall"][name] == pytest.approx(toolkit_scores["overall"][name], rel=1e-9, abs=1e-12), name
    assert set(ours["per_image"]) == set(toolkit_scores["per_image"]) == {11, 12, 13, 14, 15}
    for i, scores in toolkit_scores["per_image"].items():
        for name in SCORED:
            assert ours["per_image"][i][name] == pytest.approx(scores[name], rel=1e-9, abs=1e-12), (i, name)
    # sanity: the numbers are not degenerate
    assert 0.3 < ours["overall"]["Bleu_1"] < 1 and 0.1 < ours["overall"]["METEOR"] < 1
    assert ours["overall"]["CIDEr"] > 0.1


@needs_java
def test_result_shape(ours: dict) -> None:
    assert ours["overall"]["SPICE"]["available"] is False and "offline" in ours["overall"]["SPICE"]["reason"]
    assert ours["num_images"] == 5 and ours["num_missing"] == 1 and ours["missing_image_ids"] == [16]
    assert ours["tokenizer"].startswith("Stanford PTBTokenizer") and ours["notes"] == []
    json.dumps(ours)  # serialisable


@needs_java
def test_ptb_tokenize_equals_toolkit_tokenizer(toolkit_scores: dict) -> None:
    refs, res = _fixture_refs_and_results()
    gts, cands = toolkit_scores["tokens"]
    assert ptb_tokenize({i: refs[i] for i in res}, shutil.which("java")) == gts
    assert ptb_tokenize({i: [res[i]] for i in res}, shutil.which("java")) == cands


@needs_java
def test_python_tokenize_mimics_ptb() -> None:
    caps = {1: ['He said "hi" (loudly)... and left; can\'t stop -- ok?', "", "A 3.5-inch disk, e.g. a U.S. one."],
            2: ["Rice, meat and greens on a plate!"]}
    assert python_tokenize(caps) == ptb_tokenize(caps, shutil.which("java"))
    assert python_tokenize(caps)[1][0] == "he said hi -lrb- loudly -rrb- and left ca n't stop ok"


@needs_java
def test_line_breaks_inside_captions_keep_alignment() -> None:
    out = ptb_tokenize({1: ["a dog\r\non grass", "two\u2028cats"], 2: ["a bus"]}, shutil.which("java"))
    assert out == {1: ["a dog on grass", "two cats"], 2: ["a bus"]}


def test_perfect_captions() -> None:
    """Candidate = the (identical) references: BLEU and ROUGE-L are 1, CIDEr-D is 10 (its x10 scale)
    as long as every image has 4-grams not shared by all images."""
    refs = {1: ["a red bus parked near a tall building"] * 3, 2: ["two cats sleeping on a sofa"] * 2,
            3: ["a man riding a bike down the road"] * 4}
    scores = score_captions(refs, {i: r[0] for i, r in refs.items()}, with_meteor=False)
    for name in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L"):
        assert scores.overall[name] == pytest.approx(1.0, abs=1e-6), name
    assert scores.overall["CIDEr"] == pytest.approx(10.0, abs=1e-6)
    assert all(s["CIDEr"] == pytest.approx(10.0, abs=1e-6) for s in scores.per_image.values())
    assert scores.overall["METEOR"] == {"available": False, "reason": "not requested"}
    # and a wrong caption scores lower everywhere
    worse = score_captions(refs, {1: "a dog on the grass", 2: "two cats sleeping on a sofa", 3: "a man"},
                           with_meteor=False)
    assert all(worse.overall[n] < scores.overall[n] for n in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"))


def test_no_java_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caption_metrics, "find_java", lambda: None)
    m = score_results_file(RESULTS, ANNOTATIONS)
    assert m["overall"]["METEOR"]["available"] is False and "java" in m["overall"]["METEOR"]["reason"]
    assert "python fallback" in m["tokenizer"] and len(m["notes"]) == 2
    assert "METEOR" not in m["per_image"][11] and m["per_image"][11]["Bleu_1"] > 0.5
    assert m["overall"]["SPICE"]["available"] is False


@needs_java
def test_no_java_scores_equal_java_scores(monkeypatch: pytest.MonkeyPatch, ours: dict) -> None:
    monkeypatch.setattr(caption_metrics, "find_java", lambda: None)
    m = score_results_file(RESULTS, ANNOTATIONS)
    # the fallback tokenises these captions exactly as PTB does, so the other scores agree
    for name in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"):
        assert m["overall"][name] == pytest.approx(ours["overall"][name], rel=1e-12), name


def _write(tmp_path: Path, records: list) -> Path:
    path = tmp_path / "res.json"
    path.write_text(json.dumps(records))
    return path


def test_unknown_image_id_refused(tmp_path: Path) -> None:
    res = _write(tmp_path, [{"image_id": 11, "caption": "a dog"}, {"image_id": 77, "caption": "a cat"}])
    with pytest.raises(DataError, match=r"res\.json: record 1: unknown image_id 77"):
        score_results_file(res, ANNOTATIONS)


def test_duplicate_image_id_refused(tmp_path: Path) -> None:
    res = _write(tmp_path, [{"image_id": 11, "caption": "a dog"}, {"image_id": 11, "caption": "a cat"}])
    with pytest.raises(DataError, match=r"res\.json: record 1: duplicate image_id 11"):
        score_results_file(res, ANNOTATIONS)


@pytest.mark.parametrize("records, message", [
    ({"image_id": 11, "caption": "x"}, "JSON list"),
    ([{"image_id": 11}], "needs 'image_id' and 'caption'"),
    ([{"image_id": 11, "caption": None}], "'caption' must be a string"),
    ([{"image_id": "11", "caption": "x"}], "image_id must be an integer"),
    ([], "holds no captions"),
])
def test_malformed_results_refused(tmp_path: Path, records, message: str) -> None:
    with pytest.raises(DataError, match=message):
        score_results_file(_write(tmp_path, records), ANNOTATIONS)


def test_missing_annotations_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        score_results_file(RESULTS, tmp_path / "nope.json")


def test_meteor_failure_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(gts, res):
        raise ValueError("could not convert string to float: ''")

    monkeypatch.setattr(caption_metrics, "_meteor", broken)
    m = score_results_file(RESULTS, ANNOTATIONS)
    assert m["overall"]["METEOR"]["available"] is False and "failed" in m["overall"]["METEOR"]["reason"]
    assert m["overall"]["Bleu_1"] > 0.5 and any("METEOR" in n for n in m["notes"])
