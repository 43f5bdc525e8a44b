"""Attention supervised by boxes: box -> grid cells, the per-glimpse target regions of a question
(relation questions split their two objects over the glimpses), the per-word regions of a caption,
the loss, and tiny training runs on the committed shapes sample whose attention learns to look at
the asked-about or named objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmapp.cli import main
from mmapp.data.caption_regions import CaptionRegions
from mmapp.data.coco_captions import CaptionDataset, CaptionImage
from mmapp.data.collate import collate_captions
from mmapp.data.shapes.text import object_mentions
from mmapp.data.vqa_regions import glimpse_regions
from mmapp.data.vqa_v2 import VQAQuestion, load_vqa
from mmapp.errors import DataError
from mmapp.grid_cells import box_cells
from mmapp.losses import attention_grounding_loss, count_map_loss
from mmapp.metrics.grounding import pointing_hit
from mmapp.models.vqa import soft_count_bins

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "datasets" / "shapes_sample"
ANN = SAMPLE / "annotations"


# ------------------------------------------------------------------------------------- box -> cells


def test_box_cells_are_the_cells_a_pointing_hit_needs():
    mask = box_cells((100, 200), [0, 0, 50, 100], (4, 4))  # image 100 wide, 200 high; top-left quarter
    expected = np.zeros((4, 4), dtype=bool)
    expected[:2, :2] = True
    np.testing.assert_array_equal(mask, expected)
    for i in range(4):
        for j in range(4):
            peak = np.zeros((4, 4))
            peak[i, j] = 1.0
            assert pointing_hit(peak, (100, 200), [0, 0, 50, 100]) == mask[i, j]


def test_a_box_smaller_than_a_cell_owns_the_cell_at_its_centre():
    mask = box_cells((100, 100), [60, 10, 3, 3], (4, 4))  # no cell centre (12.5, 37.5, ...) inside
    assert mask.sum() == 1 and mask[0, 2]


# -------------------------------------------------------------------------------- glimpse regions


def _instances(tmp_path: Path) -> Path:
    data = {"images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
            "annotations": [{"id": 10, "image_id": 1, "bbox": [0, 0, 50, 50]},  # top-left
                            {"id": 11, "image_id": 1, "bbox": [50, 50, 50, 50]},  # bottom-right
                            {"id": 20, "image_id": 2, "bbox": [0, 50, 50, 50]}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def _shape_instances(tmp_path: Path) -> Path:
    data = {"images": [{"id": 1, "width": 100, "height": 100}],
            "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
            "attributes": {"color": ["red", "green", "blue"], "size": ["small", "large"]},
            "annotations": [
                {"id": 10, "image_id": 1, "category_id": 1, "color": "red", "size": "small", "bbox": [0, 0, 50, 50]},
                {"id": 11, "image_id": 1, "category_id": 2, "color": "blue", "size": "large", "bbox": [50, 50, 50, 50]},
                {"id": 12, "image_id": 1, "category_id": 2, "color": "blue", "size": "small", "bbox": [50, 0, 50, 50]}]}
    path = tmp_path / "shape_instances.json"
    path.write_text(json.dumps(data))
    return path


def _question(qid: int, qtype: str, objects: tuple[int, ...], image_id: int = 1) -> VQAQuestion:
    return VQAQuestion(qid, image_id, "?", question_type=qtype, object_ids=objects)


def test_relation_questions_send_one_glimpse_to_each_object(tmp_path):
    questions = [_question(1, "position", (11, 10)), _question(2, "count", (10, 11)),
                 _question(3, "color", (10,)), _question(4, "exists", ())]
    regions, centres = glimpse_regions(questions, _instances(tmp_path), (2, 2), glimpses=3)
    assert regions.shape == (4, 3, 4) and regions.dtype == bool
    top_left, bottom_right = [True, False, False, False], [False, False, False, True]
    both = [True, False, False, True]
    assert regions[0].tolist() == [bottom_right, top_left, both]  # "is the <11> ... the <10>?"
    assert regions[1].tolist() == [both] * 3  # counting: every glimpse on all counted objects
    assert regions[2].tolist() == [top_left] * 3
    assert not regions[3].any()  # about no object: not supervised
    # the count map's targets: the cell of each object's centre (box centres (75, 75) and (25, 25))
    assert centres.tolist() == [both, both, top_left, [False] * 4]


def test_a_count_map_target_is_one_cell_per_object(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": [{"id": 1, "width": 100, "height": 100}],
                                "annotations": [{"id": 1, "image_id": 1, "bbox": [10, 10, 80, 30]},  # wide
                                                {"id": 2, "image_id": 1, "bbox": [60, 60, 5, 5]}]}))
    _, centres = glimpse_regions([_question(1, "count", (1, 2))], path, (4, 4), 2)
    expected = np.zeros((4, 4), dtype=bool)
    expected[1, 2] = expected[2, 2] = True  # centres (50, 25) and (62.5, 62.5); cells 25 px
    np.testing.assert_array_equal(centres[0].reshape(4, 4), expected)


def test_unknown_or_foreign_objects_are_refused(tmp_path):
    path = _instances(tmp_path)
    with pytest.raises(DataError, match="question_id 5 refers to object 99"):
        glimpse_regions([_question(5, "color", (99,))], path, (2, 2), 2)
    with pytest.raises(DataError, match="object 20, which is not an object of image 1"):
        glimpse_regions([_question(6, "color", (20,))], path, (2, 2), 2)


def test_object_ids_are_read_from_the_annotations_and_checked(tmp_path):
    split = load_vqa(ANN / "questions_test.json", ANN / "annotations_test.json")
    anns = {a["question_id"]: a for a in json.loads((ANN / "annotations_test.json").read_text())["annotations"]}
    assert any(q.object_ids for q in split.questions)
    assert all(list(q.object_ids) == anns[q.question_id]["object_ids"] for q in split.questions)
    bad = json.loads((ANN / "annotations_test.json").read_text())
    bad["annotations"][0]["object_ids"] = ["a"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="'object_ids' must be a list of integers"):
        load_vqa(ANN / "questions_test.json", tmp_path / "bad.json")


# --------------------------------------------------------------------------------- caption regions


def test_object_mentions_give_each_noun_phrase_span():
    words = "a small red circle above two blue squares and three shapes".split()
    assert object_mentions(words) == [(1, 3, "red", "circle", "small"), (6, 7, "blue", "square", None)]


def test_caption_words_target_the_objects_they_name(tmp_path):
    regions = CaptionRegions(_shape_instances(tmp_path), (2, 2))
    words = "a small red circle above two blue squares and a green circle".split()
    cells = regions(1, words)
    assert cells.shape == (len(words), 4)
    red, blues = [True, False, False, False], [False, True, False, True]
    assert [cells[t].tolist() for t in (1, 2, 3)] == [red] * 3  # "small red circle"
    assert [cells[t].tolist() for t in (6, 7)] == [blues] * 2  # both blue squares
    assert regions(1, "a large blue square".split())[1:].tolist() == [[False, False, False, True]] * 3
    unsupervised = [0, 4, 5, 8, 9, 10, 11]  # other words, and a green circle the scene lacks
    assert not cells[unsupervised].any()


def test_caption_items_and_batches_carry_one_region_row_per_step(tmp_path):
    from mmapp.vocab import Vocab

    captions = ("a small red circle", "two blue squares and a red circle")
    images = [CaptionImage(1, "x.jpg", captions, "test")]
    vocab = Vocab.build(captions)
    ds = CaptionDataset.__new__(CaptionDataset)  # no visual input needed for the text fields
    ds.images, ds.vocab, ds.max_len = images, vocab, 20
    ds.regions = CaptionRegions(_shape_instances(tmp_path), (2, 2))
    ds.pairs = np.array([[0, 0], [0, 1]])
    items = [ds.fields(0), ds.fields(1)]
    assert items[0]["regions"].shape == (len(items[0]["caption"]) - 1, 4)
    batch = collate_captions(items)
    assert batch["regions"].shape == (2, batch["captions"].shape[1] - 1, 4)
    # step t writes caption token t + 1: "a small red circle <end>" -> small, red, circle supervised
    assert batch["regions"][0, :, 0].tolist() == [False, True, True, True, False] + [False] * 3
    assert not batch["regions"][0, 5:].any()  # past the caption: padding
    assert batch["regions"][1, 1:3].tolist() == [[False, True, False, True]] * 2  # "blue squares"


# ------------------------------------------------------------------------------------------- loss


def test_grounding_loss_is_minus_log_mass_over_supervised_glimpses():
    attention = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]])  # (1, 2, 4)
    regions = torch.tensor([[[True, False, False, False], [False, True, False, False]]])
    loss, stats = attention_grounding_loss(attention, regions)
    assert loss.item() == pytest.approx((0.0 + np.log(4.0)) / 2, abs=1e-5)
    assert stats["ground_mass"] == pytest.approx((1.0 + 0.25) / 2)
    unsupervised = regions.clone()
    unsupervised[0, 1] = False  # the uniform glimpse no longer counts
    assert attention_grounding_loss(attention, unsupervised)[0].item() == pytest.approx(0.0, abs=1e-5)
    none = torch.zeros_like(regions)
    assert attention_grounding_loss(attention, none)[0].item() == 0.0


def test_grounding_loss_gradient_moves_attention_into_the_region():
    logits = torch.zeros(1, 1, 4, requires_grad=True)
    regions = torch.tensor([[[False, False, True, False]]])
    attention_grounding_loss(logits.softmax(-1), regions)[0].backward()
    grad = logits.grad[0, 0]
    assert grad[2] < 0 and (grad[[0, 1, 3]] > 0).all()  # descent raises the target cell's logit


def test_soft_count_bins_put_a_count_between_its_two_nearest_integers():
    bins = soft_count_bins(torch.tensor([0.0, 2.3, 9.0]), max_count=4)
    expected = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0.7, 0.3, 0], [0, 0, 0, 0, 1.0]])  # 9 clamps to 4
    assert torch.allclose(bins, expected, atol=1e-6)


def test_count_map_loss_and_its_count_error():
    centres = torch.tensor([[True, False, True, False]])
    sure = torch.tensor([[20.0, -20.0, 20.0, -20.0]])  # sigmoid ~ the targets exactly
    loss, stats = count_map_loss(sure, centres)
    assert loss.item() < 1e-6 and stats["count_error"] == pytest.approx(0.0, abs=1e-6)
    loss, stats = count_map_loss(torch.zeros(1, 4), centres)  # sigmoid 0.5 everywhere: counts 2
    assert loss.item() == pytest.approx(4 * np.log(2.0), rel=1e-5) and stats["count_error"] == pytest.approx(0.0)
    loss, stats = count_map_loss(torch.full((1, 4), -20.0), centres)  # counts 0 of 2
    assert stats["count_error"] == pytest.approx(2.0, abs=1e-6)
    assert loss.item() == pytest.approx(stats["count_bce"] + 2.0, rel=1e-5)  # the count's error is in the loss
    smeared = torch.full((1, 4), 0.0, requires_grad=True)  # 2 of 2 counted, yet every cell half lit
    count_map_loss(smeared, torch.tensor([[True, True, True, True]]))[0].backward()
    assert (smeared.grad < 0).all()  # too few counted: every cell is pushed up, by BCE and by the count


# ---------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def sample_cache(tmp_path_factory) -> Path:
    """The shapes sample's 40 test scenes at 128 input: a 4x4 grid."""
    out = tmp_path_factory.mktemp("sample_features")
    assert main(["features", "--images", str(SAMPLE / "images"), "--out", str(out), "encoder.input_size=128",
                 "encoder.grid=last", "--workers", "0", "--quiet"]) == 0
    return out


def _sample_vqa_args(out: Path, cache: Path, *extra: str) -> list[str]:
    q, a = ANN / "questions_test.json", ANN / "annotations_test.json"
    return ["train", "vqa", "--out", str(out), f"data.features={cache}", f"data.image_index={ANN / 'captions_test.json'}",
            f"data.train_questions={q}", f"data.train_annotations={a}", f"data.val_questions={q}",
            f"data.val_annotations={a}", "train.batch_size=8", "vqa.embed_dim=16", "vqa.question_dim=32",
            "vqa.attention_dim=32", "vqa.hidden_dim=32", "vqa.dropout=0", "train.lr=1e-2", "train.warmup_steps=0",
            "train.schedule=constant", "train.device=cpu", "train.amp=off", "--quiet", *extra]


def test_supervised_glimpses_learn_to_look_at_the_objects(tmp_path, sample_cache):
    torch.set_num_threads(1)
    run = tmp_path / "grounded"
    assert main(_sample_vqa_args(run, sample_cache, "train.epochs=12", "train.grounding_weight=1.0",
                                 "vqa.count_map=6", "vqa.count_context=8",
                                 f"data.train_instances={ANN / 'instances_test.json'}")) == 0
    rows = [json.loads(line)["train"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    assert last["ground"] < 0.6 * first["ground"], (first, last)
    assert last["ground_mass"] > first["ground_mass"] + 0.15, (first, last)
    assert last["count_error"] < 0.75 * first["count_error"], (first, last)  # the count map counts (60 steps)


def test_grounding_weight_needs_the_instances_file(tmp_path, sample_cache, capsys):
    assert main(_sample_vqa_args(tmp_path / "r", sample_cache, "train.grounding_weight=1.0")) == 3  # bad input
    err = capsys.readouterr().err
    assert "train.grounding_weight needs data.train_instances" in err


def test_supervised_caption_attention_learns_to_look_at_the_named_objects(tmp_path, sample_cache):
    torch.set_num_threads(1)
    run = tmp_path / "captions"
    args = ["train", "caption", "--out", str(run), f"data.features={sample_cache}",
            f"data.train_captions={ANN / 'captions_test.json'}", f"data.val_captions={ANN / 'captions_test.json'}",
            "data.min_word_freq=1", "data.val_limit=4", "train.batch_size=8", "decoder.embed_dim=16",
            "decoder.hidden_dim=32", "decoder.attention_dim=16", "train.lr=1e-2", "train.warmup_steps=0",
            "train.schedule=constant", "train.device=cpu", "train.amp=off", "train.val_beam_size=1",
            "train.epochs=12", "train.patience=100", "train.grounding_weight=1.0", "train.attention_weight=0",
            f"data.train_instances={ANN / 'instances_test.json'}", "--quiet"]
    assert main(args) == 0
    rows = [json.loads(line)["train"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    assert last["ground"] < 0.8 * first["ground"], (first, last)
    assert last["ground_mass"] > first["ground_mass"] + 0.08, (first, last)
