"""The shapes dataset as ``scene_writer`` writes it: one scene per image, drawn and saved by
``make_image``; ids from 1,000,000 (train), 2,000,000 (val), 3,000,000 (test).

Besides the COCO fields, each instance records the object's ``color``, ``size`` and ``center``
and its outline polygon as ``segmentation``; each image its ``background`` kind; the instances
file lists the attribute values (``attributes``: colours and sizes), the words that describe them.
"""

from __future__ import annotations

from pathlib import Path

from mmapp.data.question_balance import one_per_answer
from mmapp.data.scene_writer import (DatasetSpec, ImageTask, MadeImage, caption_tokens, category_table,
                                     check_counts, image_rng, save_image, write_dataset)
from mmapp.data.shapes.questions import ANSWER_TYPES, answer_balancer, candidates
from mmapp.data.shapes.scene import COLORS, SHAPES, SIZES, render_scene, sample_scene
from mmapp.data.shapes.text import captions

ID_OFFSET: dict[str, int] = {"train": 1_000_000, "val": 2_000_000, "test": 3_000_000}
LICENSES = ({"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"},)


def make_image(task: ImageTask) -> MadeImage:
    """Sample, render and save one scene; its captions, objects and question candidates."""
    rng = image_rng(task.seed, task.split, task.index)
    scene = sample_scene(rng, task.size)
    save_image(render_scene(scene), task.path, task.image_format)
    texts = captions(scene, rng)
    objects = [{"category_id": SHAPES.index(o.shape) + 1, "bbox": list(o.bbox), "area": o.area, "iscrowd": 0,
                "segmentation": [[round(float(v), 2) for v in o.polygon().reshape(-1)]],
                "color": o.color, "size": o.size, "center": list(o.center)} for o in scene.objects]
    return MadeImage(task.index, scene.size, scene.size, texts, [caption_tokens(t) for t in texts], objects,
                     one_per_answer(candidates(scene, rng), rng), {"background": scene.background.kind})


SPEC = DatasetSpec(name="shapes", description="mmapp procedural shapes (synthetic)", licenses=LICENSES,
                   categories=category_table(SHAPES, "shape"), answer_types=ANSWER_TYPES, id_offset=ID_OFFSET,
                   make=make_image, balancer=answer_balancer, attributes={"color": COLORS, "size": SIZES})


def generate(out_dir: str | Path, counts: dict[str, int], seed: int, size: int = 224,
             workers: int = 0, progress: bool = True, image_format: str = "jpg") -> dict:
    """Write a shapes dataset (see ``mmapp.data.scene_writer``) and return its statistics.

    counts: images per split, e.g. ``{"train": 8000, "val": 1000, "test": 1000}``; a split
    with 0 images gets no files. image_format: "jpg" (quality 95, no chroma subsampling) or
    "png" (lossless, ~3x slower). Statistics as ``scene_writer.write_dataset`` returns them.
    """
    check_counts(counts, size, image_format)
    return write_dataset(SPEC, out_dir, counts, seed, size, workers, progress, image_format)
