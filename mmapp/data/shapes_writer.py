"""Write a shapes dataset in the official COCO / VQA v2 / Karpathy formats.

Layout under ``out_dir``::

    images/<split>/<split>_<12-digit image id>.jpg    (JPEG quality 95, 4:4:4; or .png)
    annotations/captions_<split>.json        COCO captions, 5 references per image
    annotations/instances_<split>.json       COCO instances (+ "color", "size", "center")
    annotations/questions_<split>.json       VQA v2 questions (Open-Ended)
    annotations/annotations_<split>.json     VQA v2 annotations (+ "object_ids")
    annotations/dataset_shapes.json          Karpathy split file (train / val / test)

Ids: image ``k`` of a split has id ``ID_OFFSET[split] + k`` (globally unique); instance ids
are ``image_id * 10 + object index``, caption ids ``image_id * 10 + j``, question ids
``image_id * 10 + q``. All 10 VQA answers of a question are the correct answer (the data is
synthetic and exact: no answer noise), so VQA accuracy equals exact match here.

Determinism: image ``k`` of a split is drawn from ``numpy.random.default_rng([seed, split
code, k])`` alone, so workers reproduce the serial output byte for byte; question choice (the
answer balancer) then runs serially in image order with its own per-image generator.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mmapp.atomic import write_json
from mmapp.data.shapes import SHAPES, Scene, render_scene, sample_scene
from mmapp.data.shapes_questions import ANSWER_TYPES, AnswerBalancer, Candidate, candidates, one_per_answer
from mmapp.data.shapes_text import captions
from mmapp.errors import InputError
from mmapp.vocab import tokenize

SPLITS: tuple[str, ...] = ("train", "val", "test")
ID_OFFSET: dict[str, int] = {"train": 1_000_000, "val": 2_000_000, "test": 3_000_000}
MAX_PER_SPLIT = 999_999
IMAGE_FORMATS: tuple[str, ...] = ("jpg", "png")
ANSWERS_PER_QUESTION = 10
_SIMPLE_CAPTION = re.compile(r"[a-z ,:]+")
_WORD = re.compile(r"[a-z]+")
_INFO = {"description": "mmapp procedural shapes (synthetic)", "version": "1.0", "year": 2024,
         "contributor": "mmapp", "url": "", "date_created": ""}
_LICENSES = [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}]


def image_id(split: str, index: int) -> int:
    """Globally unique image id of image ``index`` of ``split``."""
    return ID_OFFSET[split] + index


def image_file_name(split: str, index: int, image_format: str = "jpg") -> str:
    return f"{split}_{image_id(split, index):012d}.{image_format}"


def image_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of one image (stream 0: scene, captions, candidates; 1: question choice)."""
    return np.random.default_rng([seed, SPLITS.index(split), index, stream])


@dataclass(frozen=True)
class _Task:
    out_dir: str
    seed: int
    split: str
    index: int
    size: int
    image_format: str


@dataclass(frozen=True)
class _Made:
    index: int
    scene: Scene
    captions: list[str]
    tokens: list[list[str]]
    candidates: dict[str, list[Candidate]]


def _make(task: _Task) -> _Made:
    """Sample, render and save one image; its captions and question candidates."""
    rng = image_rng(task.seed, task.split, task.index)
    scene = sample_scene(rng, task.size)
    name = image_file_name(task.split, task.index, task.image_format)
    path = Path(task.out_dir, "images", task.split, name)
    if task.image_format == "png":
        render_scene(scene).save(path, format="PNG", compress_level=1)
    else:  # like COCO; 4:4:4 keeps thin coloured edges; ~10x faster to encode than PNG here
        render_scene(scene).save(path, format="JPEG", quality=95, subsampling=0)
    texts = captions(scene, rng)
    return _Made(task.index, scene, texts, [caption_tokens(t) for t in texts],
                 one_per_answer(candidates(scene, rng), rng))


def caption_tokens(caption: str) -> list[str]:
    """``mmapp.vocab.tokenize(caption)``, with a fast path for the generator's own captions
    (lower-case words, spaces, commas and colons), for which both give the same tokens."""
    if _SIMPLE_CAPTION.fullmatch(caption):
        return _WORD.findall(caption)
    return tokenize(caption)


def _dump(obj: dict, path: Path) -> None:
    write_json(path, obj, separators=(",", ":"))


class _SplitRecords:
    """The JSON records of one split, filled image by image in order."""

    def __init__(self, split: str, seed: int, image_format: str):
        self.split, self.seed, self.image_format = split, seed, image_format
        self.images: list[dict] = []
        self.captions: list[dict] = []
        self.caption_tokens: list[list[str]] = []  # parallel to self.captions
        self.instances: list[dict] = []
        self.questions: list[dict] = []
        self.answers: list[dict] = []
        self.balancer = AnswerBalancer()

    def add(self, made: _Made) -> None:
        scene, iid = made.scene, image_id(self.split, made.index)
        image = {"id": iid, "file_name": image_file_name(self.split, made.index, self.image_format),
                 "width": scene.size, "height": scene.size, "license": 1}
        self.images.append(image | {"background": scene.background.kind})
        for j, text in enumerate(made.captions):
            self.captions.append({"id": iid * 10 + j, "image_id": iid, "caption": text})
        self.caption_tokens.extend(made.tokens)
        for k, o in enumerate(scene.objects):
            poly = [round(float(v), 2) for v in o.polygon().reshape(-1)]
            self.instances.append({
                "id": iid * 10 + k, "image_id": iid, "category_id": SHAPES.index(o.shape) + 1,
                "bbox": list(o.bbox), "area": o.area, "iscrowd": 0, "segmentation": [poly],
                "color": o.color, "size": o.size, "center": list(o.center)})
        rng = image_rng(self.seed, self.split, made.index, stream=1)
        for q, cand in enumerate(self.balancer.pick_all(made.candidates, rng)):
            qid = iid * 10 + q
            self.questions.append({"image_id": iid, "question": cand.question, "question_id": qid})
            self.answers.append({
                "question_id": qid, "image_id": iid, "question_type": cand.qtype,
                "answer_type": ANSWER_TYPES[cand.qtype], "multiple_choice_answer": cand.answer,
                "answers": [{"answer": cand.answer, "answer_confidence": "yes", "answer_id": a + 1}
                            for a in range(ANSWERS_PER_QUESTION)],
                "object_ids": [iid * 10 + i for i in cand.objects]})

    def write(self, ann_dir: Path) -> None:
        info = _INFO | {"split": self.split, "seed": self.seed}
        plain_images = [{k: v for k, v in im.items() if k != "background"} for im in self.images]
        _dump({"info": info, "licenses": _LICENSES, "images": plain_images,
               "annotations": self.captions}, ann_dir / f"captions_{self.split}.json")
        categories = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
        _dump({"info": info, "licenses": _LICENSES, "images": self.images,
               "annotations": self.instances, "categories": categories},
              ann_dir / f"instances_{self.split}.json")
        license_ = {"name": _LICENSES[0]["name"], "url": _LICENSES[0]["url"]}
        _dump({"info": info, "task_type": "Open-Ended", "data_type": "shapes",
               "data_subtype": self.split, "license": license_, "questions": self.questions},
              ann_dir / f"questions_{self.split}.json")
        _dump({"info": info, "data_type": "shapes", "data_subtype": self.split,
               "license": license_, "annotations": self.answers},
              ann_dir / f"annotations_{self.split}.json")

    def stats(self) -> dict:
        dist: dict[str, dict[str, int]] = {}
        for a in self.answers:
            d = dist.setdefault(a["question_type"], {})
            d[a["multiple_choice_answer"]] = d.get(a["multiple_choice_answer"], 0) + 1
        nf = self.balancer.near_far
        return {"images": len(self.images), "captions": len(self.captions),
                "objects": len(self.instances), "questions": len(self.questions),
                "answers": {t: dict(sorted(d.items())) for t, d in sorted(dist.items())},
                "exists_no_near_miss": nf["near"] / max(1, nf["near"] + nf["far"])}


def _karpathy(records: list[_SplitRecords]) -> dict:
    images, sentid = [], 0
    for rec in records:
        by_image: dict[int, list[tuple[dict, list[str]]]] = {}
        for c, tokens in zip(rec.captions, rec.caption_tokens):
            by_image.setdefault(c["image_id"], []).append((c, tokens))
        for im in rec.images:
            sentences = []
            for c, tokens in by_image[im["id"]]:
                sentences.append({"tokens": tokens, "raw": c["caption"],
                                  "imgid": len(images), "sentid": sentid})
                sentid += 1
            images.append({"filepath": f"images/{rec.split}", "filename": im["file_name"],
                           "imgid": len(images), "split": rec.split, "cocoid": im["id"],
                           "sentids": [s["sentid"] for s in sentences], "sentences": sentences})
    return {"dataset": "shapes", "images": images}


def _check(counts: dict[str, int], size: int, image_format: str) -> None:
    if image_format not in IMAGE_FORMATS:
        raise InputError(f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    for split, n in counts.items():
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}: use {', '.join(SPLITS)}")
        if not isinstance(n, int) or not 0 <= n <= MAX_PER_SPLIT:
            raise InputError(f"split {split}: image count must be an integer in 0..{MAX_PER_SPLIT}, got {n!r}")
    if size < 64:
        raise InputError(f"image size must be >= 64 pixels, got {size}")


def generate(out_dir: str | Path, counts: dict[str, int], seed: int, size: int = 224,
             workers: int = 0, progress: bool = True, image_format: str = "jpg") -> dict:
    """Write a shapes dataset (see the module docstring) and return its statistics.

    counts: images per split, e.g. ``{"train": 8000, "val": 1000, "test": 1000}``; a split
    with 0 images gets no files.
    workers: processes; 0 = one per CPU, 1 = in this process.
    image_format: "jpg" (quality 95, no chroma subsampling) or "png" (lossless, ~3x slower).
    Returns ``{"out_dir", "seed", "size", "images", "seconds", "images_per_second",
    "splits": {split: {"images", "captions", "objects", "questions", "answers":
    {question type: {answer: count}}, "exists_no_near_miss"}}}``.
    """
    _check(counts, size, image_format)
    out = Path(out_dir)
    ann_dir = out / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    total = sum(counts.get(s, 0) for s in SPLITS)
    start = time.perf_counter()
    records: list[_SplitRecords] = []
    pool = multiprocessing.Pool(workers) if workers > 1 and total > 1 else None
    try:
        for split in (s for s in SPLITS if counts.get(s, 0) > 0):
            n = counts[split]
            (out / "images" / split).mkdir(parents=True, exist_ok=True)
            rec = _SplitRecords(split, seed, image_format)
            tasks = [_Task(str(out), seed, split, i, size, image_format) for i in range(n)]
            made = pool.imap(_make, tasks, chunksize=16) if pool else map(_make, tasks)
            for m in tqdm(made, total=n, desc=f"shapes {split}", unit="img", disable=not progress):
                rec.add(m)
            rec.write(ann_dir)
            records.append(rec)
    finally:
        if pool:
            pool.close()
            pool.join()
    _dump(_karpathy(records), ann_dir / "dataset_shapes.json")
    seconds = time.perf_counter() - start
    return {"out_dir": str(out), "seed": seed, "size": size, "images": total,
            "seconds": round(seconds, 3), "images_per_second": round(total / max(seconds, 1e-9), 1),
            "splits": {r.split: r.stats() for r in records}}
