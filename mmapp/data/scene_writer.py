"""Write a generated scene dataset in the official COCO / VQA v2 / Karpathy formats.

Shared by the scene generators (``data/shapes/``, ``data/objects/``): each supplies a
``DatasetSpec`` whose ``make`` draws, renders and saves one image and returns its captions,
objects and question candidates; this module numbers, balances and writes them.

Layout under ``out_dir``::

    images/<split>/<split>_<12-digit image id>.jpg    (JPEG quality 95, 4:4:4; or .png)
    annotations/captions_<split>.json        COCO captions, 5 references per image
    annotations/instances_<split>.json       COCO instances (+ the generator's own object fields)
    annotations/questions_<split>.json       VQA v2 questions (Open-Ended)
    annotations/annotations_<split>.json     VQA v2 annotations (+ "object_ids")
    annotations/dataset_<name>.json          Karpathy split file (train / val / test)

Ids: image ``k`` of a split has id ``spec.id_offset[split] + k`` (globally unique; generators use
disjoint offsets, so their datasets can be trained on together); instance ids are
``image_id * 10 + object index``, caption ids ``image_id * 10 + j``, question ids
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
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from mmapp.atomic import write_json
from mmapp.data.question_balance import AnswerBalancer, Candidate
from mmapp.errors import InputError
from mmapp.vocab import tokenize

SPLITS: tuple[str, ...] = ("train", "val", "test")
MAX_PER_SPLIT = 999_999
IMAGE_FORMATS: tuple[str, ...] = ("jpg", "png")
ANSWERS_PER_QUESTION = 10
_SIMPLE_CAPTION = re.compile(r"[a-z ,:]+")
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class ImageTask:
    """What ``DatasetSpec.make`` needs to draw image ``index`` of ``split`` and save it to ``path``."""

    path: str
    seed: int
    split: str
    index: int
    size: int
    image_format: str


@dataclass(frozen=True)
class MadeImage:
    """One drawn image: ``objects`` are COCO instance fields without ``id``/``image_id``
    (``category_id``, ``bbox``, ``area``, ... and the generator's own fields), in object order;
    ``image_fields`` extra fields of the instances file's image record (e.g. the background)."""

    index: int
    width: int
    height: int
    captions: list[str]
    tokens: list[list[str]]
    objects: list[dict[str, Any]]
    candidates: dict[str, list[Candidate]]
    image_fields: dict[str, Any]


@dataclass(frozen=True)
class DatasetSpec:
    """A generator, as the writer sees it. ``make`` must be a module-level function (it runs in
    worker processes); ``init_worker(*init_args)``, when given, runs once in each process first."""

    name: str
    description: str
    licenses: tuple[dict[str, Any], ...]
    categories: tuple[dict[str, Any], ...]
    answer_types: Mapping[str, str]
    id_offset: Mapping[str, int]
    make: Callable[[ImageTask], MadeImage]
    balancer: Callable[[], AnswerBalancer]
    init_worker: Callable[..., None] | None = None
    init_args: tuple = ()
    attributes: Mapping[str, Sequence[str]] | None = None  # attribute -> values, into the instances file


def image_id(spec: DatasetSpec, split: str, index: int) -> int:
    """Globally unique image id of image ``index`` of ``split``."""
    return spec.id_offset[split] + index


def image_file_name(spec: DatasetSpec, split: str, index: int, image_format: str = "jpg") -> str:
    return f"{split}_{image_id(spec, split, index):012d}.{image_format}"


def image_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of one image (stream 0: scene, captions, candidates; 1: question choice)."""
    return np.random.default_rng([seed, SPLITS.index(split), index, stream])


def save_image(image: Any, path: str | Path, image_format: str) -> None:
    """A PIL image as PNG (lossless) or JPEG (quality 95, 4:4:4: keeps thin coloured edges;
    ~10x faster to encode than PNG here)."""
    if image_format == "png":
        image.save(path, format="PNG", compress_level=1)
    else:
        image.save(path, format="JPEG", quality=95, subsampling=0)


def caption_tokens(caption: str) -> list[str]:
    """``mmapp.vocab.tokenize(caption)``, with a fast path for the generators' own captions
    (lower-case words, spaces, commas and colons), for which both give the same tokens."""
    if _SIMPLE_CAPTION.fullmatch(caption):
        return _WORD.findall(caption)
    return tokenize(caption)


def _dump(obj: dict, path: Path) -> None:
    write_json(path, obj, separators=(",", ":"))


class SplitRecords:
    """The JSON records of one split, filled image by image in order."""

    def __init__(self, spec: DatasetSpec, split: str, seed: int, image_format: str):
        self.spec, self.split, self.seed, self.image_format = spec, split, seed, image_format
        self.images: list[dict] = []
        self.captions: list[dict] = []
        self.caption_tokens: list[list[str]] = []  # parallel to self.captions
        self.instances: list[dict] = []
        self.questions: list[dict] = []
        self.answers: list[dict] = []
        self.balancer = spec.balancer()

    def add(self, made: MadeImage) -> None:
        iid = image_id(self.spec, self.split, made.index)
        image = {"id": iid, "file_name": image_file_name(self.spec, self.split, made.index, self.image_format),
                 "width": made.width, "height": made.height, "license": 1}
        self.images.append(image | made.image_fields)
        for j, text in enumerate(made.captions):
            self.captions.append({"id": iid * 10 + j, "image_id": iid, "caption": text})
        self.caption_tokens.extend(made.tokens)
        for k, fields in enumerate(made.objects):
            self.instances.append({"id": iid * 10 + k, "image_id": iid, **fields})
        rng = image_rng(self.seed, self.split, made.index, stream=1)
        for q, cand in enumerate(self.balancer.pick_all(made.candidates, rng)):
            qid = iid * 10 + q
            self.questions.append({"image_id": iid, "question": cand.question, "question_id": qid})
            self.answers.append({
                "question_id": qid, "image_id": iid, "question_type": cand.qtype,
                "answer_type": self.spec.answer_types[cand.qtype], "multiple_choice_answer": cand.answer,
                "answers": [{"answer": cand.answer, "answer_confidence": "yes", "answer_id": a + 1}
                            for a in range(ANSWERS_PER_QUESTION)],
                "object_ids": [iid * 10 + i for i in cand.objects]})

    def write(self, ann_dir: Path) -> None:
        spec = self.spec
        info = {"description": spec.description, "version": "1.0", "year": 2024, "contributor": "mmapp",
                "url": "", "date_created": "", "split": self.split, "seed": self.seed}
        licenses = list(spec.licenses)
        image_keys = ("id", "file_name", "width", "height", "license")
        plain_images = [{k: v for k, v in im.items() if k in image_keys} for im in self.images]
        _dump({"info": info, "licenses": licenses, "images": plain_images,
               "annotations": self.captions}, ann_dir / f"captions_{self.split}.json")
        instances = {"info": info, "licenses": licenses, "images": self.images,
                     "annotations": self.instances, "categories": list(spec.categories)}
        if spec.attributes:
            instances["attributes"] = {k: list(v) for k, v in spec.attributes.items()}
        _dump(instances, ann_dir / f"instances_{self.split}.json")
        license_ = {"name": licenses[0]["name"], "url": licenses[0]["url"]}
        _dump({"info": info, "task_type": "Open-Ended", "data_type": spec.name,
               "data_subtype": self.split, "license": license_, "questions": self.questions},
              ann_dir / f"questions_{self.split}.json")
        _dump({"info": info, "data_type": spec.name, "data_subtype": self.split,
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


def _karpathy(name: str, records: list[SplitRecords]) -> dict:
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
    return {"dataset": name, "images": images}


def check_counts(counts: Mapping[str, int], size: int, image_format: str, min_size: int = 64) -> None:
    """Refuse unknown splits, bad image counts, formats and sizes with a one-line ``InputError``."""
    if image_format not in IMAGE_FORMATS:
        raise InputError(f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    for split, n in counts.items():
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}: use {', '.join(SPLITS)}")
        if not isinstance(n, int) or not 0 <= n <= MAX_PER_SPLIT:
            raise InputError(f"split {split}: image count must be an integer in 0..{MAX_PER_SPLIT}, got {n!r}")
    if size < min_size:
        raise InputError(f"image size must be >= {min_size} pixels, got {size}")


def write_dataset(spec: DatasetSpec, out_dir: str | Path, counts: Mapping[str, int], seed: int, size: int,
                  workers: int = 0, progress: bool = True, image_format: str = "jpg") -> dict:
    """Draw and write every split of ``counts`` (see the module docstring); return statistics:
    ``{"out_dir", "seed", "size", "images", "seconds", "images_per_second", "splits": {split:
    {"images", "captions", "objects", "questions", "answers": {type: {answer: count}},
    "exists_no_near_miss"}}}``. workers: processes; 0 = one per CPU, 1 = in this process."""
    out = Path(out_dir)
    ann_dir = out / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    total = sum(counts.get(s, 0) for s in SPLITS)
    start = time.perf_counter()
    records: list[SplitRecords] = []
    pool = None
    if workers > 1 and total > 1:
        pool = multiprocessing.Pool(workers, initializer=spec.init_worker, initargs=spec.init_args)
    elif spec.init_worker is not None:
        spec.init_worker(*spec.init_args)
    try:
        for split in (s for s in SPLITS if counts.get(s, 0) > 0):
            n = counts[split]
            (out / "images" / split).mkdir(parents=True, exist_ok=True)
            rec = SplitRecords(spec, split, seed, image_format)
            tasks = [ImageTask(str(out / "images" / split / image_file_name(spec, split, i, image_format)),
                               seed, split, i, size, image_format) for i in range(n)]
            made = pool.imap(spec.make, tasks, chunksize=16) if pool else map(spec.make, tasks)
            for m in tqdm(made, total=n, desc=f"{spec.name} {split}", unit="img", disable=not progress):
                rec.add(m)
            rec.write(ann_dir)
            records.append(rec)
    finally:
        if pool:
            pool.close()
            pool.join()
    _dump(_karpathy(spec.name, records), ann_dir / f"dataset_{spec.name}.json")
    seconds = time.perf_counter() - start
    return {"out_dir": str(out), "seed": seed, "size": size, "images": total,
            "seconds": round(seconds, 3), "images_per_second": round(total / max(seconds, 1e-9), 1),
            "splits": {r.split: r.stats() for r in records}}


def category_table(names: Sequence[str], supercategory: str | Sequence[str]) -> tuple[dict[str, Any], ...]:
    """COCO categories with ids 1..N in ``names`` order."""
    supers = [supercategory] * len(names) if isinstance(supercategory, str) else list(supercategory)
    return tuple({"id": i + 1, "name": n, "supercategory": s} for i, (n, s) in enumerate(zip(names, supers)))
