"""Decode a dataset split with a checkpoint into official-format results files (``mmapp eval
--checkpoint``): COCO captions ``[{"image_id", "caption"}]`` and VQA ``[{"question_id", "answer"}]``.

Dataset folders it understands (``split`` is e.g. ``test``, ``val`` or ``val2014``):

- the shapes layout (``mmapp data shapes``): ``annotations/captions_<split>.json``,
  ``questions_<split>.json``, ``annotations_<split>.json``, images in ``images/<split>/``;
- a COCO layout: ``annotations/captions_<split>2014.json`` (or 2017), VQA v2 files
  ``v2_OpenEnded_mscoco_<split>2014_questions.json`` / ``v2_mscoco_<split>2014_annotations.json`` in
  ``vqa/``, ``annotations/`` or the folder itself, images in ``<split>2014/`` or ``images/<split>2014/``;
- captions only: a Karpathy split file (``annotations/dataset_*.json``) for ``karpathy_<split>``
  (``--split karpathy_test``), or for ``train``/``val``/``test``/``restval`` when no captions file of
  that split exists; its references are written out in the COCO captions format for the scorer.

Images are encoded in batches by the checkpoint's own encoder, or read from a feature cache built
by the same encoder (``features=``).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mmapp.atomic import write_json
from mmapp.data.coco_captions import image_files_from_json, load_caption_images, load_karpathy_split
from mmapp.data.feature_cache import FeatureCache, VisualSource
from mmapp.data.vqa_v2 import coco_image_file, load_vqa
from mmapp.errors import DataError, InputError
from mmapp.inference import Captioner, VQAModel

YEARS = ("2014", "2017", "2015")
TASKS = ("caption", "vqa")


@dataclass(frozen=True)
class SplitFiles:
    """Where one split's files are; None where the folder has none."""

    captions: Path | None = None  # COCO captions file (references, and file names of the images)
    karpathy: Path | None = None  # Karpathy split file, used when there is no captions file
    karpathy_split: str = ""  # the split to take from it
    questions: Path | None = None
    vqa_annotations: Path | None = None
    image_index: Path | None = None  # a COCO captions/instances file mapping image id -> file_name
    subtypes: tuple[str, ...] = ()  # candidate folder names of the split's images


def _subtypes(split: str) -> tuple[str, ...]:
    return (split,) if re.search(r"\d{4}$", split) else (split, *(split + y for y in YEARS))


def _first(paths: Sequence[Path]) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def find_split_files(data_dir: Path, split: str) -> SplitFiles:
    """The annotation files of ``split`` in ``data_dir`` (shapes or COCO layout); see the module doc."""
    if not data_dir.is_dir():
        raise FileNotFoundError(2, "dataset folder not found", str(data_dir))
    subtypes = _subtypes(split)
    folders = [data_dir / "annotations", data_dir / "vqa", data_dir]
    karpathy_split = split.removeprefix("karpathy_")
    captions = None if split.startswith("karpathy_") else _first(
        [f / f"captions_{t}.json" for f in folders for t in subtypes])
    instances = _first([f / f"instances_{t}.json" for f in folders for t in subtypes])
    karpathy = None
    if captions is None and karpathy_split in ("train", "val", "test", "restval"):
        karpathy = _first(sorted(p for f in folders for p in f.glob("dataset_*.json")))
    questions = _first([f / name for f in folders for t in subtypes
                        for name in (f"questions_{t}.json", f"v2_OpenEnded_mscoco_{t}_questions.json")])
    answers = None
    if questions is not None:
        answers = _first([f / name for f in (questions.parent, *folders) for t in subtypes
                          for name in (f"annotations_{t}.json", f"v2_mscoco_{t}_annotations.json")])
    return SplitFiles(captions, karpathy, karpathy_split, questions, answers, captions or instances, subtypes)


def _image_root(data_dir: Path, subtypes: Sequence[str], first_files: Sequence[str]) -> Path:
    """The folder the split's image file names are relative to (found by its first image)."""
    roots = [r for t in subtypes for r in (data_dir / "images" / t, data_dir / t)]
    roots += [data_dir / "images", data_dir]
    for root in roots:
        if any((root / f).is_file() for f in first_files):
            return root
    raise DataError(f"{data_dir}: image {first_files[0]} not found in any of "
                    f"{', '.join(str(r) for r in roots)}")


class _Images(Dataset):
    """Item i: (i, visual): a cached (P, D) grid or a preprocessed (3, S, S) image."""

    def __init__(self, requests: list[tuple[int, list[str], str]], visual: Any) -> None:
        self.visual = visual
        self.handles = visual.resolve_all(requests)  # DataError names the first missing image

    def __len__(self) -> int:
        return len(self.handles)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return i, self.visual.load(self.handles[i])


def _inputs_of(model: Any, root: Path | None, features: Path | None) -> Any:
    if features is None:
        return VisualSource(images_root=root, encoder_cfg=model.encoder.cfg)
    if model.meta["encoder"].get("fine_tune_stages", 0) > 0:
        raise InputError(f"{features}: this checkpoint fine-tuned its encoder; cached features of the frozen "
                         "encoder do not fit it (decode from the images instead)")
    cache = FeatureCache.open(features, expect_encoder=model.encoder.cfg,
                              expect_weights_id=model.meta.get("encoder_weights_id"))
    return VisualSource(features=cache)


def _batches(requests: list[tuple[int, list[str], str]], model: Any, root: Path | None, features: Path | None,
             batch_size: int, workers: int, desc: str, progress: bool):
    """Yield (image indices, grids (B, P, D) on the model's device) over every requested image."""
    dataset = _Images(requests, _inputs_of(model, root, features))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=0 if features else workers,
                        pin_memory=model.device.type == "cuda")
    bar = tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress, file=sys.stderr)
    try:
        for index, visual in loader:
            visual = visual.to(model.device, non_blocking=True)
            with torch.inference_mode():
                grids = model.encoder(visual) if visual.dim() == 4 else visual  # (B, P, D)
            yield index.tolist(), grids
            bar.update(len(index))
    finally:
        bar.close()


# -------------------------------------------------------------------------------------------------


def _caption_images(files: SplitFiles, split: str, out_dir: Path) -> tuple[list[Any], Path]:
    """(CaptionImage list, COCO captions file to score against)."""
    if files.captions is not None:
        return load_caption_images(files.captions), files.captions
    if files.karpathy is None:
        raise DataError(f"no captions file for split {split!r} (looked for annotations/captions_{split}.json, "
                        f"captions_{split}2014.json, ... and, for train/val/test, a Karpathy dataset_*.json)")
    images = load_karpathy_split(files.karpathy, files.karpathy_split, restval_as_train=False)
    if not images:
        raise DataError(f"{files.karpathy}: no images in split {files.karpathy_split!r}")
    references = {"images": [{"id": im.image_id, "file_name": im.file_name} for im in images],
                  "annotations": [{"id": n, "image_id": im.image_id, "caption": c}
                                  for n, (im, c) in enumerate((im, c) for im in images for c in im.captions)]}
    return images, write_json(out_dir / f"captions_{split}_references.json", references)


def decode_captions(model: Any, data_dir: Path, split: str, out_dir: Path, features: Path | None = None,
                    beam_size: int = 3, max_len: int | None = None, batch_size: int = 32, workers: int = 2,
                    progress: bool = True) -> dict[str, Path]:
    """Caption every image of ``split`` with a ``Captioner``; write ``captions_<split>_results.json``."""
    files = find_split_files(data_dir, split)
    images, references = _caption_images(files, split, out_dir)
    root = None if features else _image_root(data_dir, files.subtypes, [images[0].file_name])
    max_len = max_len or int(model.meta.get("training", {}).get("max_caption_len", 20))
    where = str(files.captions or files.karpathy)
    requests = [(im.image_id, [im.file_name], where) for im in images]
    results: list[dict[str, Any]] = []
    for index, grids in _batches(requests, model, root, features, batch_size, workers, f"captioning {split}",
                                 progress):
        for i, r in zip(index, model.caption_results(grids, beam_size=beam_size, max_len=max_len)):
            results.append({"image_id": images[i].image_id, "caption": r.text})
    path = write_json(out_dir / f"captions_{split}_results.json", results)
    return {"results": path, "annotations": references}


def decode_answers(model: Any, data_dir: Path, split: str, out_dir: Path, features: Path | None = None,
                   batch_size: int = 32, workers: int = 2, progress: bool = True) -> dict[str, Path]:
    """Answer every question of ``split`` with a ``VQAModel`` (each image encoded once); write
    ``vqa_<split>_results.json``. Returns its path, the questions file and (if any) the annotations."""
    files = find_split_files(data_dir, split)
    if files.questions is None:
        raise DataError(f"no VQA questions file for split {split!r} in {data_dir} (looked for "
                        f"annotations/questions_{split}.json and vqa/v2_OpenEnded_mscoco_{split}2014_questions.json)")
    vqa = load_vqa(files.questions)
    index = image_files_from_json(files.image_index) if files.image_index else None
    by_image: dict[int, list[int]] = {}
    for n, q in enumerate(vqa.questions):
        by_image.setdefault(q.image_id, []).append(n)
    image_ids = list(by_image)
    if not image_ids:
        raise DataError(f"{files.questions}: no questions")

    def candidates(image_id: int) -> list[str]:
        if index is not None:
            if image_id not in index:
                raise DataError(f"{files.questions}: image_id {image_id} is not in {files.image_index}")
            return [index[image_id]]
        name = coco_image_file(image_id, image_subtype)
        return [name, f"{image_subtype}/{name}"]

    # test-dev2015 questions are about test2015 images (COCO_test2015_<id>.jpg)
    image_subtype = (vqa.data_subtype or files.subtypes[-1]).replace("test-dev", "test")
    requests = [(i, candidates(i), str(files.questions)) for i in image_ids]
    subtypes = (image_subtype, *files.subtypes)
    root = None if features else _image_root(data_dir, subtypes, requests[0][1])
    results: list[dict[str, Any]] = []
    for index_b, grids in _batches(requests, model, root, features, batch_size, workers, f"answering {split}",
                                   progress):
        rows = [(b, n) for b, i in enumerate(index_b) for n in by_image[image_ids[i]]]
        for start in range(0, len(rows), 256):
            chunk = rows[start:start + 256]
            feats = grids[torch.tensor([b for b, _ in chunk], device=grids.device)]  # (Q, P, D)
            answered = model.answer_results(feats, [vqa.questions[n].question for _, n in chunk], top_k=1)
            for (_, n), r in zip(chunk, answered):
                results.append({"question_id": vqa.questions[n].question_id, "answer": r.answers[0][0]})
    out = {"results": write_json(out_dir / f"vqa_{split}_results.json", results), "questions": files.questions}
    if files.vqa_annotations is not None:
        out["annotations"] = files.vqa_annotations
    return out


def decode_split(task: str, checkpoint: Path, data_dir: Path, split: str, out_dir: Path,
                 features: Path | None = None, beam_size: int = 3, batch_size: int = 32, workers: int | None = None,
                 device: str = "auto", progress: bool = True) -> dict[str, Path]:
    """Decode ``split`` of ``data_dir`` with ``checkpoint`` into official-format results in ``out_dir``.

    Returns ``{"results": results file, "annotations": file to score against}`` and, for VQA,
    ``"questions"`` (``"annotations"`` is absent for a VQA split without annotations, e.g. test-dev).
    A ``decode.json`` beside the results records the checkpoint, split and timing.
    """
    if task not in TASKS:
        raise InputError(f"task must be one of {TASKS}, got {task!r}")
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    checkpoint, data_dir, out_dir = Path(checkpoint), Path(data_dir), Path(out_dir)
    start = time.perf_counter()
    if task == "caption":
        model = Captioner.from_checkpoint(checkpoint, device=device)
        files = decode_captions(model, data_dir, split, out_dir, features, beam_size, None, batch_size, workers,
                                progress)
    else:
        model = VQAModel.from_checkpoint(checkpoint, device=device)
        files = decode_answers(model, data_dir, split, out_dir, features, batch_size, workers, progress)
    count = len(json.loads(files["results"].read_text()))
    write_json(out_dir / "decode.json", {
        "task": task, "checkpoint": str(checkpoint), "data": str(data_dir), "split": split,
        "features": str(features) if features else None, "beam_size": beam_size if task == "caption" else None,
        "results": count, "seconds": round(time.perf_counter() - start, 3), "device": str(model.device),
        "files": {k: str(v) for k, v in files.items()}})
    return files
