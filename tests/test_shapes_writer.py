"""The shapes dataset on disk: official formats, ids, determinism across workers, the CLI."""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from mmapp.cli import main
from mmapp.data.shapes.scene import SHAPES
from mmapp.data.shapes.questions import ANSWER_TYPES, QUESTION_TYPES
from mmapp.data.shapes.text import load_present_objects, mentioned_objects
from mmapp.data.scene_writer import SPLITS, caption_tokens
from mmapp.data.shapes.writer import generate
from mmapp.vocab import tokenize

COUNTS = {"train": 10, "val": 4, "test": 4}


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("serial")
    return out, generate(out, COUNTS, seed=3, workers=1, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root: Path, name: str) -> dict:
    return json.loads((root / "annotations" / name).read_text())


def test_same_seed_same_bytes_whatever_the_workers(serial, tmp_path):
    root, stats = serial
    generate(tmp_path / "par", COUNTS, seed=3, workers=2, progress=False)
    a, b = _files(root), _files(tmp_path / "par")
    assert len(a) == sum(COUNTS.values()) + 4 * len(SPLITS) + 1  # images, 4 per split, Karpathy
    assert a == b
    generate(tmp_path / "other", {"val": 4}, seed=4, workers=1, progress=False)
    c = _files(tmp_path / "other")
    assert c["annotations/captions_val.json"] != a["annotations/captions_val.json"]
    assert all(c[k] != a[k] for k in c if k.startswith("images/"))
    assert stats["images"] == 18 and stats["splits"]["train"]["images"] == 10


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside pycocotools' annToMask
def test_coco_files_load_and_are_consistent(serial):
    root, _ = serial
    all_ids = []
    for split in SPLITS:
        caps = COCO(str(root / "annotations" / f"captions_{split}.json"))
        inst = COCO(str(root / "annotations" / f"instances_{split}.json"))
        assert sorted(caps.getImgIds()) == sorted(inst.getImgIds())
        assert len(caps.getImgIds()) == COUNTS[split]
        assert [c["name"] for c in inst.loadCats(inst.getCatIds())] == list(SHAPES)
        present = load_present_objects(root / "annotations" / f"instances_{split}.json")
        for img_id in caps.getImgIds():
            info = caps.loadImgs(img_id)[0]
            with Image.open(root / "images" / split / info["file_name"]) as im:
                assert im.size == (info["width"], info["height"]) and im.mode == "RGB"
            texts = [a["caption"] for a in caps.loadAnns(caps.getAnnIds(imgIds=img_id))]
            assert len(texts) == 5 == len(set(texts))
            objects = inst.loadAnns(inst.getAnnIds(imgIds=img_id))
            assert 1 <= len(objects) <= 6
            for o in objects:
                x, y, w, h = o["bbox"]
                assert 0 <= x and 0 <= y and x + w <= info["width"] and y + h <= info["height"]
                assert o["area"] > 0 and o["iscrowd"] == 0 and o["color"] and o["size"]
                assert inst.annToMask(o).sum() > 0.8 * o["area"]
            have = Counter(present[img_id])
            for t in texts:
                assert all(have[m] >= n for m, n in Counter(mentioned_objects(t)).items()), t
        all_ids += caps.getImgIds()
    assert len(all_ids) == len(set(all_ids))


def test_vqa_files_are_consistent(serial):
    root, stats = serial
    for split in SPLITS:
        questions = _load(root, f"questions_{split}.json")
        answers = _load(root, f"annotations_{split}.json")
        instances = _load(root, f"instances_{split}.json")
        assert questions["task_type"] == "Open-Ended" and questions["data_subtype"] == split
        assert answers["data_subtype"] == split and answers["data_type"] == questions["data_type"]
        objects = {a["id"]: a["image_id"] for a in instances["annotations"]}
        images = {im["id"] for im in instances["images"]}
        qs, anns = questions["questions"], answers["annotations"]
        assert [q["question_id"] for q in qs] == [a["question_id"] for a in anns]
        assert len({q["question_id"] for q in qs}) == len(qs) >= 4 * COUNTS[split]
        for q, a in zip(qs, anns):
            assert q["image_id"] == a["image_id"] in images
            assert q["question"].endswith("?") and q["question"] == q["question"].lower()
            assert a["question_type"] in QUESTION_TYPES
            assert a["answer_type"] == ANSWER_TYPES[a["question_type"]]
            assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
            assert {x["answer"] for x in a["answers"]} == {a["multiple_choice_answer"]}
            assert all(x["answer_confidence"] == "yes" for x in a["answers"])
            assert all(objects[i] == a["image_id"] for i in a["object_ids"])
        dist = stats["splits"][split]["answers"]
        assert sum(sum(d.values()) for d in dist.values()) == len(qs)


def test_karpathy_split_file(serial):
    root, _ = serial
    data = _load(root, "dataset_shapes.json")
    assert data["dataset"] == "shapes"
    images = data["images"]
    assert Counter(im["split"] for im in images) == Counter(COUNTS)
    assert [im["imgid"] for im in images] == list(range(len(images)))
    sentids = [s["sentid"] for im in images for s in im["sentences"]]
    assert sentids == list(range(len(sentids)))
    for im in images:
        assert (root / im["filepath"] / im["filename"]).is_file()
        assert im["sentids"] == [s["sentid"] for s in im["sentences"]] and len(im["sentids"]) == 5
        for s in im["sentences"]:
            assert s["imgid"] == im["imgid"] and s["tokens"] == tokenize(s["raw"])


def test_fast_tokens_equal_the_project_tokenizer():
    for text in ("there is a large red circle, a small blue square and a green star",
                 "four shapes: two red stars and an orange hexagon", "Odd, Text! with 2 stars."):
        assert caption_tokens(text) == tokenize(text)


def test_cli_writes_the_dataset(tmp_path):
    out = tmp_path / "cli"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["data", "shapes", "--out", str(out), "--train", "3", "--val", "2", "--test", "1",
                   "--seed", "1", "--workers", "1", "--format", "png", "--quiet"])
    assert rc == 0 and "wrote 6 images" in buf.getvalue()
    assert len(list((out / "images" / "train").glob("train_*.png"))) == 3
    for split in SPLITS:
        for kind in ("captions", "instances", "questions", "annotations"):
            assert (out / "annotations" / f"{kind}_{split}.json").is_file()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["data", "shapes", "--out", str(out), "--workers", "0"]) == 3  # bad input
    assert "--workers" in err.getvalue()


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        generate(tmp_path, {"training": 2}, seed=0, workers=1, progress=False)
    with pytest.raises(ValueError, match="size"):
        generate(tmp_path, {"val": 2}, seed=0, size=32, workers=1, progress=False)
