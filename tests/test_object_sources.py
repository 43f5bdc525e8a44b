"""Real-object sources: the committed vocabulary, finding and loading cut-outs, the vocabulary's
build rules and the real-photo list. No source package is needed: the tests draw tiny fake ones."""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from mmapp.data.objects.real_photos import (PhotoSpec, accepted_forms, load_photo, load_real_photos,
                                            names_thing, read_photo_specs)
from mmapp.data.objects.sources import (SOURCES, SUPERCATEGORIES, SUPERCATEGORY_PLURALS, SourceDirs, VocabEntry,
                                        class_table, find_sources, load_cutout, load_cutouts,
                                        read_vocabulary)
from mmapp.errors import InputError

from tests.support.scripts import load_script


def _build_module():
    return load_script("build_object_vocabulary")


@pytest.fixture(scope="module")
def build():
    return _build_module()


@pytest.fixture(scope="module")
def vocabulary() -> list[VocabEntry]:
    return read_vocabulary()


# ----------------------------------------------------------------------------------------------
# The committed vocabulary.


def test_committed_vocabulary_is_consistent(vocabulary):
    assert len(vocabulary) >= 500
    keys = [(e.source, e.key) for e in vocabulary]
    assert len(set(keys)) == len(keys), "a source image is listed twice"
    assert keys == sorted(keys), "rows are sorted by (source, key)"
    plural_of, super_of = defaultdict(set), defaultdict(set)
    for e in vocabulary:
        assert e.supercategory in SUPERCATEGORIES
        assert e.noun == e.noun.lower().strip() and 1 <= len(e.noun.split()) <= 2, e.noun
        assert e.source in SOURCES
        if e.source == "emoji":
            assert e.key.endswith(".webp") and "/" not in e.key
        elif e.source in ("noto", "twemoji"):
            assert e.key.endswith(".png") and "/" not in e.key
        else:
            assert e.key.endswith(".png") and not e.key.startswith("symbols/") and "/cartoon/" not in e.key
        plural_of[e.noun].add(e.plural)
        super_of[e.noun].add(e.supercategory)
    assert all(len(v) == 1 for v in plural_of.values()), {n: v for n, v in plural_of.items() if len(v) > 1}
    assert all(len(v) == 1 for v in super_of.values()), {n: v for n, v in super_of.items() if len(v) > 1}
    nouns = set(plural_of)
    clashes = {n: p for n, (p,) in plural_of.items() if p != n and p in nouns}
    assert not clashes, f"a plural is another class's noun: {clashes}"
    assert len(nouns) >= 300
    assert {"cat", "dog", "apple", "car", "person", "cup", "rocket"} <= nouns


def test_every_fluent_emoji_has_its_noto_and_twemoji_drawings_under_the_same_noun(vocabulary):
    by_code: dict[str, dict[str, str]] = defaultdict(dict)
    for e in vocabulary:
        if e.source != "tuxpaint":
            by_code[e.key.split(".")[0].removesuffix("-fe0f")][e.source] = e.noun
    for code, nouns in by_code.items():
        assert "emoji" in nouns, f"a drawing of {code} without its Fluent render"
        assert len(set(nouns.values())) == 1, (code, nouns)
    drawn = [code for code, nouns in by_code.items() if {"noto", "twemoji"} <= set(nouns)]
    assert len(drawn) >= 0.95 * len(by_code)


def test_supercategories_are_a_small_fixed_set_with_plurals(vocabulary):
    assert 12 <= len(SUPERCATEGORIES) <= 20 and len(set(SUPERCATEGORIES)) == len(SUPERCATEGORIES)
    assert set(SUPERCATEGORY_PLURALS) == set(SUPERCATEGORIES)
    assert SUPERCATEGORY_PLURALS["animal"] == "animals" and SUPERCATEGORY_PLURALS["person"] == "people"
    assert {e.supercategory for e in vocabulary} == set(SUPERCATEGORIES), "every supercategory has images"


def test_read_vocabulary_refuses_bad_rows(tmp_path):
    header = "source\tkey\tnoun\tplural\tsupercategory\n"
    good = tmp_path / "good.tsv"
    good.write_text(header + "emoji\t1f408.webp\tcat\tcats\tanimal\n")
    assert read_vocabulary(good) == [VocabEntry("emoji", "1f408.webp", "cat", "cats", "animal")]
    for name, body in {"header": "a\tb\n", "fields": header + "emoji\t1f408.webp\tcat\tcats\n",
                       "super": header + "emoji\t1f408.webp\tcat\tcats\tmammal\n",
                       "source": header + "openclipart\tx.png\tcat\tcats\tanimal\n"}.items():
        bad = tmp_path / f"{name}.tsv"
        bad.write_text(body)
        with pytest.raises(InputError):
            read_vocabulary(bad)


def test_class_table_counts_images_per_noun():
    entries = [VocabEntry("emoji", "a.webp", "cat", "cats", "animal"),
               VocabEntry("tuxpaint", "b.png", "cat", "cats", "animal"),
               VocabEntry("emoji", "c.webp", "dog", "dogs", "animal"),
               VocabEntry("emoji", "d.webp", "apple", "apples", "fruit")]
    table = class_table(entries)
    assert table == {"animal": {"cat": 2, "dog": 1}, "fruit": {"apple": 1}}
    assert list(table) == ["animal", "fruit"]  # SUPERCATEGORIES order


# ----------------------------------------------------------------------------------------------
# Finding the packages and loading cut-outs, on fake layouts.


def _cutout(size=(80, 60), box=(10, 5, 50, 45), colour=(200, 30, 30)) -> Image.Image:
    """A transparent canvas with one opaque rectangle at ``box`` (left, top, right, bottom)."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    image.paste(Image.new("RGBA", (box[2] - box[0], box[3] - box[1]), (*colour, 255)), box[:2])
    return image


@pytest.fixture
def fake_sources(tmp_path) -> SourceDirs:
    tux = tmp_path / "stamps"
    (tux / "food" / "fruit").mkdir(parents=True)
    _cutout().save(tux / "food" / "fruit" / "apple_red.png")
    (tux / "food" / "fruit" / "apple_red.txt").write_text("A red apple.\nUne pomme rouge.\n")
    emoji = tmp_path / "assets"
    emoji.mkdir()
    _cutout(size=(256, 256), box=(40, 60, 200, 120)).save(emoji / "1f415.webp", lossless=True)
    drawings = {}
    for source in ("noto", "twemoji"):
        drawings[source] = tmp_path / source
        drawings[source].mkdir()
        _cutout(size=(136, 128), box=(8, 20, 128, 110)).save(drawings[source] / "1f415.png")
    return find_sources(tux, emoji, **drawings)


def test_find_sources_names_the_install_command(tmp_path, monkeypatch):
    for source in SOURCES:
        monkeypatch.delenv(f"MMAPP_{source.upper()}_DIR", raising=False)
    with pytest.raises(InputError, match="sudo apt-get install tuxpaint-stamps-default"):
        find_sources(tmp_path, tmp_path)
    for source in ("emoji", "noto", "twemoji"):
        with pytest.raises(InputError, match=f"bash scripts/install_object_sources.sh.*MMAPP_{source.upper()}_DIR"):
            find_sources(**{source: tmp_path}, need=(source,))
    with pytest.raises(InputError) as e:
        find_sources(tmp_path / "missing", need=("tuxpaint",))
    assert "\n" not in str(e.value)


def test_find_sources_reads_arguments_then_environment(fake_sources, monkeypatch, tmp_path):
    for source in SOURCES:
        monkeypatch.setenv(f"MMAPP_{source.upper()}_DIR", str(getattr(fake_sources, source)))
    assert find_sources() == fake_sources
    assert find_sources(need=("emoji",)) == SourceDirs(None, fake_sources.emoji)
    with pytest.raises(InputError):  # an argument wins over the environment
        find_sources(tuxpaint=tmp_path / "nothing", need=("tuxpaint",))


def test_load_cutout_crops_to_the_opaque_box_and_respects_max_side(fake_sources):
    apple = VocabEntry("tuxpaint", "food/fruit/apple_red.png", "apple", "apples", "fruit")
    image = load_cutout(apple, fake_sources)
    assert image.mode == "RGBA" and image.size == (40, 40)
    assert np.asarray(image)[..., 3].min() == 255  # nothing transparent is left around it
    dog = VocabEntry("emoji", "1f415.webp", "dog", "dogs", "animal")
    assert load_cutout(dog, fake_sources).size == (160, 60)
    small = load_cutout(dog, fake_sources, max_side=32)
    assert small.size == (32, 12)
    pairs = load_cutouts([apple, dog], fake_sources, max_side=20, progress=False)
    assert [(e.noun, im.size) for e, im in pairs] == [("apple", (20, 20)), ("dog", (20, 8))]
    for source in ("noto", "twemoji"):  # the drawings load the same way, from their own folders
        assert load_cutout(VocabEntry(source, "1f415.png", "dog", "dogs", "animal"), fake_sources).size == (120, 90)


def test_load_cutout_refuses_an_empty_image_and_a_missing_file(fake_sources):
    Image.new("RGBA", (30, 30), (255, 0, 0, 0)).save(fake_sources.emoji / "1f408.webp", lossless=True)
    with pytest.raises(InputError, match="no opaque pixel"):
        load_cutout(VocabEntry("emoji", "1f408.webp", "cat", "cats", "animal"), fake_sources)
    with pytest.raises(InputError, match="install_object_sources"):
        load_cutout(VocabEntry("emoji", "1f999.webp", "llama", "llamas", "animal"), fake_sources)
    with pytest.raises(InputError, match="no folder"):
        load_cutout(VocabEntry("emoji", "1f415.webp", "dog", "dogs", "animal"),
                    SourceDirs(fake_sources.tuxpaint, None))


# ----------------------------------------------------------------------------------------------
# The build script's rules.


def test_plural_rules(build):
    assert [build.plural(n) for n in ("cat", "fox", "bus", "cherry", "day", "mouse", "sheep", "person",
                                      "knife", "tape measure", "polar bear", "computer mouse", "giraffe")] == \
        ["cats", "foxes", "buses", "cherries", "days", "mice", "sheep", "people",
         "knives", "tape measures", "polar bears", "computer mice", "giraffes"]


def test_descriptions_and_names_map_to_one_everyday_noun(build):
    table = build.noun_table()
    assert build.clean_description("A red kangaroo.") == "kangaroo"
    assert build.clean_description("A bunch of grapes.") == "grapes"
    assert build.clean_description("A “Fuji” apple.") == "fuji apple"
    assert build.clean_description("Seville orange, also called a bitter orange.") == "seville orange"
    assert build.to_noun("fuji apple", table) == "apple"  # the last word
    assert build.to_noun("mandarin orange", table) == "orange"
    assert build.to_noun("kiwifruit", table) == "kiwi"
    assert build.to_noun("landmark made of stones", table) is None
    assert build.emoji_noun("RED APPLE", table) == "apple"
    assert build.emoji_noun("AUTOMOBILE", table) == "car"
    assert build.emoji_noun("ROOSTER", table) == "chicken"
    assert build.emoji_noun("DOG", table) == "dog"
    for name in ("DOG FACE", "CLOCK FACE ONE OCLOCK", "WAXING CRESCENT MOON SYMBOL", "BLACK RIGHTWARDS ARROW",
                 "WAVING WHITE FLAG", "ARIES", "FERRIS WHEEL", "SPEECH BALLOON", "THUMBS UP SIGN"):
        assert build.emoji_noun(name, table) is None, name


def test_emoji_file_filters(build):
    assert build.is_single_code_point("1f415") and build.is_single_code_point("2708-fe0f")
    assert not build.is_single_code_point("1f415-200d-1f9ba")
    assert not build.is_single_code_point("0023-fe0f-20e3")
    assert not build.is_single_code_point("1f1e6-1f1e8")
    assert build.emoji_name("1f415") == "DOG"
    assert build.emoji_name("1fabf") == "GOOSE"  # newer than some Pythons' Unicode database


def test_tuxpaint_rules(build):
    table = build.noun_table()
    assert build.tuxpaint_noun("animals/marsupials/kangaroo.png", "A red kangaroo.", table) == "kangaroo"
    assert build.tuxpaint_noun("symbols/heart.png", "A heart.", table) is None
    assert build.tuxpaint_noun("animals/cartoon/dog.png", "A dog.", table) is None
    assert build.tuxpaint_noun("town/roadsigns/stop.png", "A stop sign.", table) is None
    assert build.tuxpaint_noun("vehicles/x_mirror.png", None, table) is None
    assert build.tuxpaint_noun("animals/mammals/wildboar.png", "Two wild boars.", table) is None  # override


def test_every_class_has_one_supercategory(build):
    table = build.noun_table()
    assert set(table.values()) == set(SUPERCATEGORIES)
    assert all(v in table for v in build.SYNONYMS.values()), "a synonym points at no class"
    assert all(v is None or v in table for v in build.TUX_NOUNS.values())


def test_collect_and_write_on_a_fake_layout(build, tmp_path):
    tux = tmp_path / "stamps"
    for folder, name, text in (("food/fruit", "apple_red", "A red apple."), ("food/fruit", "kiwi", "A kiwifruit."),
                               ("symbols", "heart", "A heart."), ("animals/cartoon", "dog", "A dog."),
                               ("town/monuments", "thing", "A landmark made of stones.")):
        (tux / folder).mkdir(parents=True, exist_ok=True)
        _cutout(colour=(len(name) * 20, 10, 10)).save(tux / folder / f"{name}.png")
        (tux / folder / f"{name}.txt").write_text(text + "\n")
    _cutout(colour=(1, 2, 3)).save(tux / "food" / "fruit" / "kiwi_mirror.png")
    _cutout(size=(40, 40), box=(0, 0, 20, 20)).save(tux / "food" / "fruit" / "speck.png")
    (tux / "food" / "fruit" / "speck.txt").write_text("An apricot.\n")
    emoji = tmp_path / "assets"
    emoji.mkdir()
    for stem in ("1f34e", "1f436", "1f415-200d-1f9ba", "2708-fe0f"):
        _cutout(size=(64, 64), box=(4, 4, 60, 60), colour=(int(stem[:2], 16), 9, 9)).save(
            emoji / f"{stem}.webp", lossless=True)
    kept, dropped = build.collect(tux, emoji)
    assert sorted(kept) == [("emoji", "1f34e.webp", "apple"), ("emoji", "2708-fe0f.webp", "airplane"),
                            ("tuxpaint", "food/fruit/apple_red.png", "apple"),
                            ("tuxpaint", "food/fruit/kiwi.png", "kiwi")]
    reasons = {key: reason for _, key, reason in dropped}
    assert set(reasons) == {"1f436.webp", "food/fruit/kiwi_mirror.png", "food/fruit/speck.png",
                            "town/monuments/thing.png"}
    assert "under 32 px" in reasons["food/fruit/speck.png"]
    out = tmp_path / "vocabulary.tsv"
    build.write_tsv(kept, out)
    entries = read_vocabulary(out)
    assert [(e.source, e.key) for e in entries] == sorted((s, k) for s, k, _ in kept)
    assert entries[0] == VocabEntry("emoji", "1f34e.webp", "apple", "apples", "fruit")
    assert "| fruit | 2 | 1 | 3 |" in build.summary(kept)


def test_collect_keeps_the_other_artists_drawings_of_each_kept_emoji(build, tmp_path):
    tux, emoji, noto, twemoji = (tmp_path / name for name in ("stamps", "assets", "noto", "twemoji"))
    for folder in (tux / "food", emoji, noto, twemoji):
        folder.mkdir(parents=True)
    for stem in ("1f34e", "1f436", "2708-fe0f"):  # apple, dog face (no class), airplane
        _cutout(size=(64, 64), box=(4, 4, 60, 60), colour=(int(stem[:2], 16), 9, 9)).save(
            emoji / f"{stem}.webp", lossless=True)
    for folder, shade in ((noto, 50), (twemoji, 90)):
        for stem in ("1f34e", "1f436", "2708"):
            _cutout(size=(64, 64), box=(2, 2, 50, 50), colour=(shade, int(stem[:2], 16), 9)).save(folder / f"{stem}.png")
    (twemoji / "2708.png").unlink()
    kept, dropped = build.collect(tux, emoji, {"noto": noto, "twemoji": twemoji})
    assert sorted(kept) == [("emoji", "1f34e.webp", "apple"), ("emoji", "2708-fe0f.webp", "airplane"),
                            ("noto", "1f34e.png", "apple"), ("noto", "2708.png", "airplane"),
                            ("twemoji", "1f34e.png", "apple")]
    assert ("twemoji", "2708.png", "no twemoji picture of airplane") in dropped
    assert "| fruit | 1 | 1 | 3 |" in build.summary(kept)
    assert "noto 2, twemoji 1" in build.summary(kept)


# ----------------------------------------------------------------------------------------------
# Real photos.


def test_photo_list_nouns_are_in_the_vocabulary(vocabulary):
    specs = read_photo_specs()
    nouns = {e.noun for e in vocabulary}
    assert {"chelsea", "coffee", "astronaut", "rocket"} <= {s.name for s in specs}
    assert len({s.name for s in specs}) == len(specs)
    for spec in specs:
        assert set(spec.nouns) <= nouns, spec
    assert any(not s.known for s in specs), "unknown things give the out-of-domain check's other rate"


def test_caption_word_match_takes_whole_words_and_plurals():
    plurals = {"cat": "cats", "polar bear": "polar bears", "mouse": "mice"}
    forms = accepted_forms(["cat", "polar bear", "mouse"], plurals)
    assert forms == {"cat", "cats", "polar bear", "polar bears", "mouse", "mice"}
    assert names_thing("A cat on a sofa", forms) and names_thing("two mice.", forms)
    assert names_thing("there are two polar bears", forms)
    assert not names_thing("a catapult and a bear", forms)
    assert not names_thing("a polar fox beside a bear", forms)


def test_load_photos_from_functions_files_and_missing_packages(tmp_path, monkeypatch):
    package = tmp_path / "fakepkg_mmapp_test"
    (package / "images").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    Image.new("L", (40, 30), 128).save(package / "images" / "grey.png")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = PhotoSpec("grey", "fakepkg", "fakepkg_mmapp_test/images/grey.png", ("cat",), "CC0", "")
    image = load_photo(spec)
    assert image.mode == "RGB" and image.size == (40, 30)
    assert load_photo(PhotoSpec("chelsea", "scikit-image", "skimage.data:chelsea", ("cat",), "", "")).size == (451, 300)
    photos = {"photos": [
        {"name": "grey", "package": "fakepkg", "loader": "fakepkg_mmapp_test/images/grey.png", "nouns": ["cat"],
         "licence": "", "note": ""},
        {"name": "gone", "package": "nopkg", "loader": "no_such_package_mmapp/x.jpg", "nouns": [],
         "licence": "", "note": ""},
        {"name": "nofile", "package": "fakepkg", "loader": "fakepkg_mmapp_test/images/none.jpg", "nouns": [],
         "licence": "", "note": ""}]}
    path = tmp_path / "photos.json"
    path.write_text(json.dumps(photos))
    skipped: list = []
    loaded = load_real_photos(path, skipped)
    assert [s.name for s, _ in loaded] == ["grey"]
    assert [(s.name, why) for s, why in skipped] == [
        ("gone", "skipped: nopkg not installed"), ("nofile", "skipped: images/none.jpg not in the installed fakepkg")]
    assert "fakepkg_mmapp_test" not in sys.modules


def test_real_photo_totals_count_each_thing_once_as_well_as_each_photo():
    totals = load_script("real_photos", "real_photos_script").totals

    def row(nouns, named, right):
        return {"name": "", "package": "p", "nouns": nouns, "known": bool(nouns), "caption_names_it": named,
                "answer_right": right, "p": 0.5, "ood_captioner": None, "ood_vqa": None}

    fish = [row(["fish"], True, True)] * 3 + [row(["fish"], False, True)]
    t = totals(fish + [row(["chair"], False, False), row(["cup", "coffee"], True, False), row([], False, False)])
    assert (t["known_photos"], t["caption_names_it"], t["answer_right"]) == (6, 4, 4)
    assert t["known_things"] == 3  # fish, chair, cup-or-coffee (a thing is its accepted nouns, in any order)
    assert t["things_caption_names"] == 1.8 and t["things_answer_right"] == 1.0  # fish 3/4 + cup 1; fish 4/4


def test_real_photo_totals_say_how_well_each_score_tells_known_from_unknown_things():
    script = load_script("real_photos", "real_photos_script")
    assert script.separation([0.9, 0.8], [0.1, 0.2]) == 1.0 and script.separation([0.1], [0.9]) == 0.0
    assert script.separation([0.5, 0.9], [0.5]) == 0.75 and script.separation([], [0.5]) is None

    def row(known, p, ood):
        return {"name": "", "package": "p", "nouns": ["cat"] if known else [], "known": known, "p": p,
                "caption_names_it": False, "answer_right": False, "ood_captioner": {"score": ood, "out_of_domain": False},
                "ood_vqa": None}

    t = script.totals([row(True, 0.9, 5.0), row(True, 0.6, 1.0), row(False, 0.7, 2.0)])
    # known photos answered 0.9 and 0.6 against 0.7; out-of-domain scores 5 and 1 against 2 (low: familiar)
    assert t["known_from_unknown"] == {"ood_captioner": 0.5, "ood_vqa": None, "answer_probability": 0.5}
    t = script.totals([row(True, 0.9, 1.0), row(False, 0.2, 3.0)])
    assert t["known_from_unknown"] == {"ood_captioner": 1.0, "ood_vqa": None, "answer_probability": 1.0}


@pytest.mark.usefixtures("one_thread")
def test_real_photos_script_runs_on_tiny_checkpoints(tmp_path, capsys, monkeypatch):
    from tests.support.tiny import make_tiny_checkpoints

    cap, vqa = make_tiny_checkpoints(tmp_path / "ckpt", captioner_ood_threshold=-1.0)
    package = tmp_path / "fakepkg_mmapp_photos"
    package.mkdir()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(package / "a.png")
    monkeypatch.syspath_prepend(str(tmp_path))
    photos = tmp_path / "photos.json"
    photos.write_text(json.dumps({"photos": [
        {"name": "orange", "package": "p", "loader": "fakepkg_mmapp_photos/a.png", "nouns": ["orange"],
         "licence": "", "note": ""},
        {"name": "thing", "package": "p", "loader": "fakepkg_mmapp_photos/a.png", "nouns": [],
         "licence": "", "note": ""},
        {"name": "gone", "package": "scikit-nothing", "loader": "no_such_package_mmapp:f", "nouns": ["cat"],
         "licence": "", "note": ""}]}))
    script = load_script("real_photos", "real_photos_script")
    assert script.main(["--captioner", str(cap), "--vqa", str(vqa), "--photos", str(photos),
                        "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in report["photos"]}
    assert set(rows) == {"orange", "thing"}
    assert report["skipped"] == [{"name": "gone", "reason": "skipped: scikit-nothing not installed"}]
    assert rows["orange"]["ood_captioner"]["out_of_domain"] is True  # threshold -1 flags everything
    assert rows["orange"]["ood_vqa"] is None  # the tiny VQA model carries no statistics
    assert rows["orange"]["answer_right"] is False and rows["thing"]["known"] is False
    assert report["totals"]["known_photos"] == 1 and report["totals"]["unknown_photos"] == 1
    assert report["totals"]["by_package"]["p"]["known_photos"] == 1 and rows["orange"]["package"] == "p"
    assert report["totals"]["known_flagged_out_of_domain"]["captioner"] == 1
    assert script.main(["--captioner", str(cap), "--vqa", str(vqa), "--photos", str(photos), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "totals:" in text and "gone  skipped: scikit-nothing not installed" in text
    photos.write_text(json.dumps({"photos": [
        {"name": "x", "package": "p", "loader": "fakepkg_mmapp_photos/a.png", "nouns": ["unicorn"],
         "licence": "", "note": ""}]}))
    assert script.main(["--captioner", str(cap), "--vqa", str(vqa), "--photos", str(photos)]) == 2
    assert "unicorn" in capsys.readouterr().err
