"""The objects generator (data/objects/) on tiny cut-outs the test draws itself: official formats,
true captions and answers, held-out source images in val/test, determinism, and mixing with shapes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mmapp.data.coco_captions import load_caption_images
from mmapp.data.mentions import load_scene_objects
from mmapp.data.mix import mix_datasets
from mmapp.data.objects.scene import CutOut, CutOutPool
from mmapp.data.objects.sources import VocabEntry, read_vocabulary
from mmapp.data.objects.writer import generate, split_sources
from mmapp.data.shapes.writer import generate as generate_shapes
from mmapp.data.vqa_v2 import load_vqa
from mmapp.errors import InputError

CLASSES = [("cat", "cats", "animal", 3), ("dog", "dogs", "animal", 2), ("apple", "apples", "fruit", 2),
           ("banana", "bananas", "fruit", 1), ("car", "cars", "vehicle", 2), ("hammer", "hammers", "tool", 1)]


def _sources(root: Path) -> tuple[Path, Path]:
    """A Tux Paint-like folder of RGBA cut-outs (ellipses of a colour per image) and its vocabulary."""
    stamps = root / "stamps"
    rows = ["source\tkey\tnoun\tplural\tsupercategory"]
    rng = np.random.default_rng(0)
    for noun, plural, kind, n in CLASSES:
        for k in range(n):
            key = f"{kind}/{noun}{k}.png"
            (stamps / kind).mkdir(parents=True, exist_ok=True)
            im = Image.new("RGBA", (60, 40), (0, 0, 0, 0))
            ImageDraw.Draw(im).ellipse((4, 4, 56, 36), fill=tuple(int(v) for v in rng.integers(0, 255, 3)) + (255,))
            im.save(stamps / key)
            rows.append(f"tuxpaint\t{key}\t{noun}\t{plural}\t{kind}")
    vocab = root / "vocabulary.tsv"
    vocab.write_text("\n".join(rows) + "\n")
    return stamps, vocab


def _generate(tmp_path: Path, name: str, workers: int = 1, seed: int = 0, **counts: int) -> Path:
    stamps, vocab = _sources(tmp_path / "src")
    out = tmp_path / name
    generate(out, counts or {"train": 12, "val": 4, "test": 4}, seed=seed, size=128, workers=workers,
             progress=False, vocabulary=vocab, folders={"tuxpaint": stamps})
    return out


def _digest(folder: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_files_are_in_the_official_formats_and_every_statement_is_true(tmp_path):
    out = _generate(tmp_path, "objects")
    ann = out / "annotations"
    images = load_caption_images(ann / "captions_train.json")
    assert len(images) == 12 and all(len(im.captions) == 5 for im in images)
    assert len(load_caption_images(ann / "dataset_objects.json", "test")) == 4
    lexicon, objects, sizes = load_scene_objects(ann / "instances_train.json")
    for im in images:  # every noun phrase of every reference names something in the picture
        present = objects[im.image_id]
        for caption in im.captions:
            for m in lexicon.mentions(caption.split()):
                assert any(m.matches(o) for o in present), (caption, [o.category for o in present])
    questions = load_vqa(ann / "questions_train.json", ann / "annotations_train.json").questions
    assert {q.question_type for q in questions} >= {"count", "exists", "kind"}
    for q in questions:
        named = [o for i in q.object_ids for o in objects[q.image_id] if o.id == i]  # bigger: the larger first
        if q.question_type == "count":
            assert int(q.multiple_choice_answer) == len(q.object_ids)
        elif q.question_type in ("object", "kind"):
            assert [o.category for o in named] == [q.multiple_choice_answer]
        elif q.question_type == "exists":
            assert (q.multiple_choice_answer == "yes") == bool(named)
        elif q.question_type == "bigger":
            assert q.multiple_choice_answer in q.question and q.multiple_choice_answer == named[0].category


def test_val_and_test_use_only_held_out_source_images(tmp_path):
    out = _generate(tmp_path, "objects")
    held = {k for k, v in split_sources(read_vocabulary(tmp_path / "src" / "vocabulary.tsv")).items()
            if v == "held_out"}
    for split in ("train", "val", "test"):
        data = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
        used = {a["source"] for a in data["annotations"]}
        assert used <= held if split != "train" else not used & held


def test_split_sources_holds_out_from_every_class_with_two_images(tmp_path):
    entries = read_vocabulary(_sources(tmp_path)[1])
    split = split_sources(entries)
    for noun, _, _, n in CLASSES:
        mine = [split[f"tuxpaint:{e.key}"] for e in entries if e.noun == noun]
        assert mine.count("held_out") == (1 if n >= 2 else 0) and "train" in mine


def test_a_class_drawn_by_three_artists_holds_out_its_fluent_render_and_keeps_its_photograph():
    entries = [VocabEntry("tuxpaint", "animals/dog.png", "dog", "dogs", "animal"),
               VocabEntry("emoji", "1f415.webp", "dog", "dogs", "animal"),
               VocabEntry("noto", "1f415.png", "dog", "dogs", "animal"),
               VocabEntry("twemoji", "1f415.png", "dog", "dogs", "animal"),
               VocabEntry("emoji", "1f408.webp", "cat", "cats", "animal"),
               VocabEntry("noto", "1f408.png", "cat", "cats", "animal"),
               VocabEntry("twemoji", "1f408.png", "cat", "cats", "animal")]
    held = sorted(k for k, v in split_sources(entries).items() if v == "held_out")
    assert held == ["emoji:1f408.webp", "emoji:1f415.webp"]


def test_a_photograph_is_drawn_twice_as_often_as_the_three_drawings_of_one_emoji_together():
    image = Image.new("RGBA", (8, 8), (9, 9, 9, 255))
    pool = CutOutPool([CutOut("tuxpaint:dog.png", "dog", "dogs", "animal", image, photo=True)]
                      + [CutOut(f"{s}:1f415", "dog", "dogs", "animal", image, photo=False)
                         for s in ("emoji", "noto", "twemoji")]
                      + [CutOut(f"{s}:1f408", "cat", "cats", "animal", image, photo=False) for s in ("noto", "twemoji")])
    photo = pool.by_noun["dog"].index(0)
    assert pool.image_p["dog"][photo] == pytest.approx(2 / 3)
    assert np.allclose(pool.image_p["cat"], 0.5)
    rng = np.random.default_rng(0)
    draws = [pool.draw(rng) for _ in range(6000)]
    dogs = [i for i in draws if pool.cutouts[i].noun == "dog"]
    assert abs(len(dogs) / len(draws) - 0.5) < 0.03  # classes uniformly, whatever their image counts
    assert abs(dogs.count(0) / len(dogs) - 2 / 3) < 0.03


def test_output_depends_on_the_seed_only(tmp_path):
    one = _generate(tmp_path, "a", workers=1)
    two = _generate(tmp_path, "b", workers=2)
    other = _generate(tmp_path, "c", workers=1, seed=1)
    assert _digest(one) == _digest(two) != _digest(other)


def test_missing_sources_name_the_install_command(tmp_path):
    _, vocab = _sources(tmp_path / "src")
    with pytest.raises(InputError, match="install"):
        generate(tmp_path / "out", {"train": 2}, seed=0, vocabulary=vocab, folders={"tuxpaint": tmp_path / "nothing"},
                 progress=False)


def test_mix_keeps_every_record_and_merges_categories(tmp_path):
    objects = _generate(tmp_path, "objects", train=6, val=2)
    shapes = tmp_path / "shapes"
    generate_shapes(shapes, {"train": 5, "val": 2}, seed=0, workers=1, progress=False)
    counts = mix_datasets([shapes, objects], tmp_path / "mix")
    assert counts == {str(shapes): {"train": 5, "val": 2}, str(objects): {"train": 6, "val": 2}}
    ann = tmp_path / "mix" / "annotations"
    assert len(load_caption_images(ann / "captions_train.json")) == 11
    assert len(load_caption_images(ann / "dataset_mix.json", "val")) == 4
    lexicon, objs, _ = load_scene_objects(ann / "instances_train.json")
    names = {o.category for v in objs.values() for o in v}
    assert names & {"circle", "square", "triangle", "star", "hexagon", "diamond"} and names & {c[0] for c in CLASSES}
    for im in load_caption_images(ann / "captions_train.json"):
        assert (tmp_path / "mix" / "images" / "train" / Path(im.file_name).name).is_file()
