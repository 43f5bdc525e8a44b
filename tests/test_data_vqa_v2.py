"""VQA v2 loader on the official-format fixtures: answer vocabulary, hand-computed soft scores,
image lookup (official naming, a file mapping, the feature cache), collate, bad data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mmapp.config import EncoderConfig
from mmapp.data.collate import collate_vqa
from mmapp.data.feature_extraction import extract_features
from mmapp.data.vqa_v2 import (VQADataset, build_answer_vocab, build_question_vocab, coco_image_file,
                               load_vqa, soft_targets)
from mmapp.errors import DataError
from mmapp.vocab import SPECIALS, AnswerVocab, Vocab

COCO = Path(__file__).resolve().parents[1] / "datasets" / "fixtures" / "coco"
QUESTIONS = COCO / "vqa" / "v2_OpenEnded_mscoco_train2014_questions.json"
ANNOTATIONS = COCO / "vqa" / "v2_mscoco_train2014_annotations.json"
CFG = EncoderConfig(weights="none", input_size=64)
# Normalised answer counts over all 10 answers of the 5 fixture questions, by hand:
# no 1+9=10, yes 9+1=10, 1 ("1" x6 + "one" x2)=8, green 7, space suit 6 ("Space suit." and
# "a space suit" included), then 2/spacesuit/yellow 2 each, astronaut suit/suit/yellow green 1 each.
TOP8 = ("no", "yes", "1", "green", "space suit", "2", "spacesuit", "yellow")


@pytest.fixture(scope="module")
def split():
    return load_vqa(QUESTIONS, ANNOTATIONS)


def test_load_joins_questions_and_annotations(split):
    assert split.data_subtype == "train2014" and split.has_answers
    assert [q.question_id for q in split.questions] == [9000, 9001, 25000, 30000, 30001]
    q = split.questions[3]
    assert (q.image_id, q.question, q.answer_type, q.multiple_choice_answer) == (
        30, "What color are the cat's eyes?", "other", "green")
    assert len(q.answers) == 10 and q.answers[1] == "Green"  # raw answers kept for evaluation
    assert load_vqa(QUESTIONS).questions[0].answers == ()  # test split: no annotations


def test_answer_vocab_all_answers_and_mc(split):
    assert build_answer_vocab(split.questions, top_k=8).answers == TOP8
    assert build_answer_vocab(split.questions, top_k=3, count="all").answers == ("no", "yes", "1")
    # one multiple-choice answer per question, all different: ties broken alphabetically
    assert build_answer_vocab(split.questions, top_k=10, count="mc").answers == (
        "1", "green", "no", "space suit", "yes")


def test_soft_scores_hand_computed(split):
    vocab = AnswerVocab(TOP8)
    third, two_thirds = 1 / 3, 2 / 3
    expected = {
        9000: {"space suit": 1.0, "spacesuit": two_thirds},  # suit, astronaut suit: not in the vocab
        9001: {"yes": 1.0, "no": third},
        25000: {"1": 1.0, "2": two_thirds},
        30000: {"green": 1.0, "yellow": two_thirds},  # "yellow green" (1 human) not in the vocab
        30001: {"no": 1.0, "yes": third},  # "no " counts as "no": 9 humans
    }
    ds = VQADataset(split, Vocab(SPECIALS + ("is", "this", "a", "dog")), vocab,
                    images_root=COCO, encoder_cfg=CFG)
    for i, q in enumerate(split.questions):
        want = np.zeros(len(TOP8), dtype=np.float32)
        for answer, score in expected[q.question_id].items():
            want[TOP8.index(answer)] = score
        np.testing.assert_allclose(ds[i]["target"].numpy(), want, rtol=0, atol=1e-6)
        assert soft_targets(q.answers, vocab) == pytest.approx(
            {TOP8.index(a): s for a, s in expected[q.question_id].items()})
    item = ds[4]  # "Is this a dog?"
    assert item["question"].tolist() == [4, 5, 6, 7]
    assert (item["question_id"], item["image_id"]) == (30001, 30)
    assert item["answers"][-1] == "no " and item["visual"].shape == (3, 64, 64)


def test_image_lookup_official_naming_and_mapping(split, tmp_path):
    vocab, answers = build_question_vocab(split.questions), AnswerVocab(TOP8)
    assert coco_image_file(9, "train2014") == "COCO_train2014_000000000009.jpg"
    flat = VQADataset(split, vocab, answers, images_root=COCO / "train2014", encoder_cfg=CFG)
    nested = VQADataset(split, vocab, answers, images_root=COCO, encoder_cfg=CFG)
    assert flat.handles[9] == str(COCO / "train2014" / "COCO_train2014_000000000009.jpg") == nested.handles[9]
    # any folder + a {image_id: file_name} source (here a COCO captions file) works too
    renamed = tmp_path / "imgs"
    renamed.mkdir()
    mapping = {}
    for i in (9, 25, 30):
        shutil.copy(COCO / "train2014" / coco_image_file(i, "train2014"), renamed / f"scene_{i}.png")
        mapping[i] = f"scene_{i}.png"
    by_map = VQADataset(split, vocab, answers, images_root=renamed, encoder_cfg=CFG, image_files=mapping)
    assert by_map.handles[25] == str(renamed / "scene_25.png")
    by_json = VQADataset(split, vocab, answers, images_root=COCO / "train2014", encoder_cfg=CFG,
                         image_files=COCO / "annotations" / "captions_train2014.json")
    torch.testing.assert_close(by_json[0]["visual"], flat[0]["visual"])


def test_features_source_and_collate(split, tmp_path):
    from mmapp.models.encoder import build_encoder

    paths = sorted((COCO / "train2014").glob("*.jpg"))
    ids = [int(p.stem.rsplit("_", 1)[1]) for p in paths]
    cache = extract_features(paths, [p.name for p in paths], build_encoder(CFG), tmp_path / "c",
                             image_ids=ids, progress=False)
    ds = VQADataset(split, build_question_vocab(split.questions), AnswerVocab(TOP8), features=cache,
                    max_question_len=3)
    np.testing.assert_array_equal(ds[3]["visual"].numpy(), cache.get(30).astype(np.float32))
    batch = collate_vqa([ds[i] for i in range(5)])
    h, w = cache.grid_size
    assert batch["visual"].shape == (5, h * w, cache.dim)
    assert batch["questions"].shape == (5, 3) and batch["lengths"].tolist() == [3, 3, 3, 3, 3]
    assert batch["targets"].shape == (5, 8) and batch["targets"][3, TOP8.index("green")] == 1.0
    assert batch["question_ids"].tolist() == [9000, 9001, 25000, 30000, 30001]
    assert len(batch["answers"][0]) == 10
    full = VQADataset(split, build_question_vocab(split.questions), AnswerVocab(TOP8), features=cache)
    b = collate_vqa([full[1], full[3]])  # "is she smiling" (3 words), "what color are the cat's eyes" (7)
    assert b["lengths"].tolist() == [3, 7] and b["questions"][0, 3:].eq(0).all()


# ------------------------------------------------------------------------------ bad data


def _mutated(tmp_path: Path, src: Path, mutate) -> Path:
    data = json.loads(src.read_text())
    mutate(data)
    out = tmp_path / src.name
    out.write_text(json.dumps(data))
    return out


def _drop_annotation(d):
    d["annotations"].pop(2)


def _dup_question(d):
    d["questions"].append(dict(d["questions"][0]))


def _extra_annotation(d):
    d["annotations"].append(dict(d["annotations"][0], question_id=777))


@pytest.mark.parametrize("which, mutate, expected", [
    ("a", _drop_annotation, "question #2 (question_id 25000): no annotation in"),
    ("a", lambda d: d["annotations"][1].update(answers=[]), "annotation #1 (question_id 9001): no answers"),
    ("a", lambda d: d["annotations"][0]["answers"][3].update(answer=3),
     "annotation #0 (question_id 9000) answer #3: 'answer' must be a string"),
    ("a", lambda d: d["annotations"][4].update(image_id=9), "annotation of question_id 30001: image_id 9 differs"),
    ("a", _extra_annotation, "annotation of question_id 777 has no question"),
    ("a", lambda d: d["annotations"].append(dict(d["annotations"][0])), "duplicate question_id 9000"),
    ("q", _dup_question, "question #5 (question_id 9000): duplicate question_id 9000"),
    ("q", lambda d: d["questions"][1].update(question=" "), "question #1 (question_id 9001): empty question"),
    ("q", lambda d: d["questions"][0].pop("image_id"), "question #0 (question_id 9000): missing key 'image_id'"),
    ("q", lambda d: d["questions"][0].update(question_id=True), "question #0: 'question_id' must be an integer"),
])
def test_bad_data(tmp_path, which, mutate, expected):
    q = _mutated(tmp_path, QUESTIONS, mutate) if which == "q" else QUESTIONS
    a = _mutated(tmp_path, ANNOTATIONS, mutate) if which == "a" else ANNOTATIONS
    with pytest.raises(DataError) as e:
        load_vqa(q, a)
    msg = str(e.value)
    assert expected in msg and (str(q) in msg or str(a) in msg)


def test_question_without_words(tmp_path):
    q = _mutated(tmp_path, QUESTIONS, lambda d: d["questions"][2].update(question="?!"))
    split = load_vqa(q, ANNOTATIONS)
    with pytest.raises(DataError, match=r"questions.json: question_id 25000: no words in '\?!'"):
        VQADataset(split, Vocab(SPECIALS), AnswerVocab(TOP8), images_root=COCO, encoder_cfg=CFG)


def test_missing_image_checked_up_front(split, tmp_path):
    root = tmp_path / "train2014"
    shutil.copytree(COCO / "train2014", root)
    (root / "COCO_train2014_000000000030.jpg").unlink()
    with pytest.raises(DataError) as e:
        VQADataset(split, build_question_vocab(split.questions), AnswerVocab(TOP8), images_root=root, encoder_cfg=CFG)
    assert str(QUESTIONS) in str(e.value) and "image 30: file not found" in str(e.value)
    with pytest.raises(DataError, match=r"image_id 25 \(question_id 25000\) is not in the image file list"):
        VQADataset(split, build_question_vocab(split.questions), AnswerVocab(TOP8), images_root=root,
                   encoder_cfg=CFG, image_files={9: "a.jpg", 30: "b.jpg"})
