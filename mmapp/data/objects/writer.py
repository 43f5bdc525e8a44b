"""The objects dataset as ``scene_writer`` writes it: scenes of real-photo cut-outs, with ids from
11,000,000 (train), 12,000,000 (val), 13,000,000 (test), disjoint from the shapes dataset's.

Source images are split once, by a fixed rule that does not depend on the seed
(``split_sources``): a class with two or more source images keeps about a quarter of them (at
least one) out of training; validation and test scenes are made of those held-out images only,
so the test split measures new pictures of known things. Classes with one image are trained on
and never tested.

Besides the COCO fields, each instance records its cut-out (``source``: "tuxpaint:<path>",
"emoji:<file>", "noto:<file>" or "twemoji:<file>") and whether it is ``flipped``; each category its
``plural``; each image its ``background`` kind.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Sequence

from mmapp.data.objects.kinds import ObjectWords
from mmapp.data.objects.questions import ANSWER_TYPES, answer_balancer, candidates
from mmapp.data.objects.scene import CutOut, CutOutPool, load_textures, render_scene, sample_scene
from mmapp.data.objects.sources import SOURCES, VocabEntry, find_sources, load_cutouts, read_vocabulary
from mmapp.data.objects.text import captions
from mmapp.data.question_balance import one_per_answer
from mmapp.errors import InputError
from mmapp.data.scene_writer import (DatasetSpec, ImageTask, MadeImage, caption_tokens, check_counts, image_rng,
                                     save_image, write_dataset)

ID_OFFSET: dict[str, int] = {"train": 11_000_000, "val": 12_000_000, "test": 13_000_000}
HELD_OUT_SHARE = 0.25
MAX_SIDE = 384  # cut-outs are kept at most this large (longer side), before scaling into a scene
LICENSES = (
    {"id": 1, "name": "GPL-2.0 (Tux Paint stamps), MIT (Fluent Emoji 3D), Apache-2.0 (Noto Emoji) and "
                      "CC-BY-4.0 (Twemoji, Copyright Twitter, Inc and other contributors); see docs/objects.md",
     "url": "https://www.gnu.org/licenses/old-licenses/gpl-2.0.html"},
)

# Drawing state of this process: set once by ``_init_worker`` (in each worker, or in this process
# when generating serially), read by ``make_image``. Worker processes cannot share the pools
# cheaply any other way.
_DRAWING: dict[str, Any] = {}


def split_sources(entries: Sequence[VocabEntry]) -> dict[str, str]:
    """"source:key" -> "train" or "held_out". A class with n >= 2 source images holds out
    max(1, round(n / 4)) of them, taken where a picture of the same source stays in training
    (a held-out photograph keeps another photograph in training), else its Fluent 3D render
    (``emoji``; its Noto and Twemoji drawings stay in training), so the class's photographs are
    trained on. Within a source, images go by a hash of their key."""
    by_noun: dict[str, list[VocabEntry]] = {}
    for e in entries:
        by_noun.setdefault(e.noun, []).append(e)
    out = {f"{e.source}:{e.key}": "train" for e in entries}
    for members in by_noun.values():
        if len(members) < 2:
            continue
        by_source: dict[str, list[VocabEntry]] = {}
        for e in sorted(members, key=lambda e: hashlib.sha1(f"{e.source}:{e.key}".encode()).hexdigest()):
            by_source.setdefault(e.source, []).append(e)
        for _ in range(max(1, round(HELD_OUT_SHARE * len(members)))):
            spare = [s for s in sorted(by_source) if len(by_source[s]) >= 2]
            source = spare[0] if spare else ("emoji" if "emoji" in by_source else sorted(by_source)[0])
            out[f"{source}:{by_source[source].pop(0).key}"] = "held_out"
            if not by_source[source]:
                del by_source[source]
    return out


def object_words(entries: Sequence[VocabEntry]) -> ObjectWords:
    return ObjectWords({e.noun: e.plural for e in entries}, {e.noun: e.supercategory for e in entries})


def categories(entries: Sequence[VocabEntry]) -> tuple[dict[str, Any], ...]:
    """COCO categories, one per noun (sorted), with the extension field ``plural``."""
    nouns = sorted({e.noun: e for e in entries}.items())
    return tuple({"id": i + 1, "name": n, "supercategory": e.supercategory, "plural": e.plural}
                 for i, (n, e) in enumerate(nouns))


def _init_worker(vocabulary: str | None, folders: dict[str, str]) -> None:
    entries = read_vocabulary(vocabulary)
    dirs = find_sources(**folders, need=tuple(sorted({e.source for e in entries})))
    assignment = split_sources(entries)
    loaded = load_cutouts(entries, dirs, max_side=MAX_SIDE, progress=False)
    pools: dict[str, list[CutOut]] = {"train": [], "held_out": []}
    for e, image in loaded:
        pools[assignment[f"{e.source}:{e.key}"]].append(CutOut(f"{e.source}:{e.key}", e.noun, e.plural,
                                                               e.supercategory, image, SOURCES[e.source].photo))
    qv = object_words(entries)
    _DRAWING.update(pools={k: CutOutPool(v) for k, v in pools.items() if v}, textures=load_textures(), vocab=qv,
                    category_ids={c["name"]: c["id"] for c in categories(entries)})


def make_image(task: ImageTask) -> MadeImage:
    """Sample, render and save one scene; its captions, objects and question candidates."""
    rng = image_rng(task.seed, task.split, task.index)
    pool: CutOutPool = _DRAWING["pools"]["train" if task.split == "train" else "held_out"]
    vocab: ObjectWords = _DRAWING["vocab"]
    scene = sample_scene(rng, pool, task.size)
    save_image(render_scene(scene, pool, _DRAWING["textures"]), task.path, task.image_format)
    texts = captions(scene, vocab, rng)
    objects = [{"category_id": _DRAWING["category_ids"][o.noun], "bbox": [float(v) for v in o.box], "area": o.area,
                "iscrowd": 0, "source": pool.cutouts[o.cutout].key, "flipped": o.flip} for o in scene.objects]
    return MadeImage(task.index, scene.size, scene.size, texts, [caption_tokens(t) for t in texts], objects,
                     one_per_answer(candidates(scene, vocab, rng), rng), {"background": scene.background.kind})


def generate(out_dir: str | Path, counts: dict[str, int], seed: int, size: int = 448, workers: int = 0,
             progress: bool = True, image_format: str = "jpg", vocabulary: str | Path | None = None,
             folders: Mapping[str, str | Path | None] | None = None) -> dict:
    """Write an objects dataset (see ``mmapp.data.scene_writer`` for the files) and return its statistics.

    vocabulary: the TSV of source images and nouns (default: the committed one); folders: source
    name ("tuxpaint", "emoji", "noto", "twemoji") -> its folder (default: where its package
    installs; ``InputError`` with the install command when missing).
    """
    check_counts(counts, size, image_format, min_size=96)
    entries = read_vocabulary(vocabulary)
    folders = {k: str(v) for k, v in (folders or {}).items() if v is not None}
    find_sources(**folders, need=tuple(sorted({e.source for e in entries})))  # fail before forking
    if counts.get("val", 0) or counts.get("test", 0):
        held = [k for k, v in split_sources(entries).items() if v == "held_out"]
        if not held:
            raise InputError("no class has two source images: nothing can be held out for val/test")
    spec = DatasetSpec(name="objects", description="mmapp scenes of real-photo cut-outs (synthetic)",
                       licenses=LICENSES, categories=categories(entries), answer_types=ANSWER_TYPES,
                       id_offset=ID_OFFSET, make=make_image,
                       balancer=lambda: answer_balancer(sorted({e.noun for e in entries})),
                       init_worker=_init_worker,
                       init_args=(None if vocabulary is None else str(vocabulary), folders))
    return write_dataset(spec, out_dir, counts, seed, size, workers, progress, image_format)
