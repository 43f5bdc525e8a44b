"""The app's parts without a server: overlays, input checks, the micro-batcher, batched model calls,
the out-of-domain hook, the Models panel and the ``mmapp app`` command's start-up checks."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmapp.app.batching import MicroBatcher
from mmapp.app.models_panel import model_card
from mmapp.app.overlay import heatmap_overlay, smooth_map, word_overlays
from mmapp.app.service import AppService, open_upload
from tests.support.tiny import make_tiny_checkpoints, write_scene
from mmapp.errors import ImageError, InputError
from mmapp.inference import Captioner, VQAModel, check_beam_size, check_question, check_top_k
from mmapp.ood import DomainCheck, OODStats


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    cap_path, vqa_path = make_tiny_checkpoints(folder, captioner_ood_threshold=-1.0)  # always out of domain
    captioner = Captioner.from_checkpoint(cap_path, "cpu")
    vqa = VQAModel.from_checkpoint(vqa_path, "cpu", encoder=captioner.encoder)
    return captioner, vqa, {"captioner": cap_path, "vqa": vqa_path}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    return [Image.open(write_scene(folder / f"s{i}.png", seed=i, size=96 + 16 * i)).convert("RGB") for i in range(4)]


# ---------------------------------------------------------------------------------------------- overlays


def test_smooth_map_is_smooth_normalised_and_peaks_where_the_grid_does():
    grid = np.zeros((4, 4), dtype=np.float32)
    grid[1, 2] = 1.0
    up = smooth_map(grid, (200, 100))  # (height 100, width 200)
    assert up.shape == (100, 200) and up.dtype == np.float32
    assert up.min() == pytest.approx(0.0) and up.max() == pytest.approx(1.0)
    y, x = np.unravel_index(up.argmax(), up.shape)
    assert 25 <= y < 50 and 100 <= x < 150  # inside cell (1, 2)
    assert len(np.unique(up.round(3))) > 100  # interpolated, not 16 flat cells
    assert np.abs(np.diff(up, axis=1)).max() < 0.1  # no hard cell edges


def test_flat_maps_stay_faint_and_overlays_keep_the_image_size():
    assert np.abs(smooth_map(np.full((3, 3), 1 / 9), (10, 12))).max() < 1e-5
    nearly_flat = smooth_map(np.full((3, 3), 1 / 9) + np.eye(3) * 1e-3, (30, 30))
    assert 0 < nearly_flat.max() < 0.05  # noise is not stretched to full range
    image = Image.new("RGB", (120, 80), (10, 200, 30))
    overlay = heatmap_overlay(image, np.eye(4))
    assert overlay.size == (120, 80) and overlay.mode == "RGB"
    assert np.asarray(overlay).astype(int).sum() != np.asarray(image).astype(int).sum()
    pairs = word_overlays(Image.new("RGB", (1000, 500)), ["a", "red", "circle"], np.random.rand(3, 4, 4))
    assert [label for _, label in pairs] == ["1: a", "2: red", "3: circle"]
    assert pairs[0][0].size == (448, 224)  # drawn on a display-size copy


# ---------------------------------------------------------------------------------------------- input checks


def test_open_upload_accepts_payloads_and_names_the_original_file(tmp_path):
    path = write_scene(tmp_path / "x.png")
    image, warnings = open_upload({"path": str(path), "orig_name": "holiday.png"})
    assert image.mode == "RGB" and image.size == (224, 224) and warnings == []
    assert open_upload(str(path))[0].size == (224, 224)
    bad = tmp_path / "upload123.png"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match=r"^notes\.png is not an image file"):
        open_upload({"path": str(bad), "orig_name": "notes.png"})
    with pytest.raises(ImageError, match="no image given"):
        open_upload(None)
    with pytest.raises(ImageError, match="^x.png was not uploaded to this app"):
        open_upload({"path": str(path)}, allowed_roots=[tmp_path / "uploads"])
    assert open_upload({"path": str(path)}, allowed_roots=[tmp_path])[0].size == (224, 224)


def test_open_upload_warns_about_animation(tmp_path):
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100)
    image, warnings = open_upload({"path": str(tmp_path / "a.gif"), "orig_name": "a.gif"})
    assert image.size == (32, 32) and warnings == ["a.gif is animated: only its first frame is used"]


@pytest.mark.parametrize("value, expected", [(1, 1), (3.0, 3), ("10", 10)])
def test_beam_size_accepted(value, expected):
    assert check_beam_size(value) == expected


@pytest.mark.parametrize("value", [0, 11, 2.5, "abc", None, True])
def test_beam_size_refused(value):
    with pytest.raises(InputError, match="beam size must be a whole number from 1 to 10"):
        check_beam_size(value)


@pytest.mark.parametrize("value", [0, 21, 1.5, "x", None, False])
def test_top_k_refused(value):
    with pytest.raises(InputError, match="top-k must be a whole number from 1 to 20"):
        check_top_k(value)


def test_check_question(models):
    vocab = models[1].vocab
    assert check_question("  what color is the circle? ", vocab) == ("what color is the circle?", [])
    question, warnings = check_question("what color is the 🟥 circle?", vocab)
    assert warnings == ["words the model does not know were ignored: '🟥'"]
    _, warnings = check_question("what color is the big circle", vocab, max_words=4)
    assert warnings == ["the question has 6 words; only the first 4 are read: 'big circle' was cut off"]
    for bad, message in [("", "the question is empty"), ("   ", "the question is empty"), (None, "empty"),
                         ("x" * 10_000, "10,000 characters long; the limit is 500"),
                         ("?!", "has no words"), ("🙂🙂", "none of the question's words are known"),
                         ("这是什么颜色", "none of the question's words are known")]:
        with pytest.raises(InputError, match=message):
            check_question(bad, vocab)


# ---------------------------------------------------------------------------------------------- batching


def test_micro_batcher_batches_concurrent_items_and_isolates_failures():
    seen = []

    def run(items):
        seen.append(list(items))
        time.sleep(0.05)
        if "boom" in items:
            raise RuntimeError("batch failed")
        return [ValueError(f"bad {i}") if i == "bad" else i.upper() for i in items]

    batcher = MicroBatcher(run, max_batch_size=4)
    items = ["a", "b", "bad", "c", "boom", "d", "e", "f"]
    results: dict[str, object] = {}

    def go(item):
        try:
            results[item] = batcher.submit(item, timeout=10)
        except Exception as e:  # noqa: BLE001
            results[item] = e

    threads = [threading.Thread(target=go, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {k: v for k, v in results.items() if isinstance(v, str)} == {i: i.upper() for i in "abcdef"}
    assert str(results["bad"]) == "bad bad" and str(results["boom"]) == "batch failed"
    assert max(batcher.batch_sizes) > 1 and max(batcher.batch_sizes) <= 4
    assert ["boom"] in seen  # the failing batch was retried item by item
    batcher.close()


def test_micro_batcher_lingers_for_stragglers_only_under_load():
    import threading
    import time

    from mmapp.app.batching import MicroBatcher

    def run(items):
        time.sleep(0.05)  # a model call
        return list(items)

    batcher = MicroBatcher(run, max_batch_size=4, linger_s=0.5)
    start = time.monotonic()
    assert batcher.submit("alone") == "alone"
    assert time.monotonic() - start < 0.4  # idle (no batch yet): no waiting for company
    blocker = threading.Thread(target=batcher.submit, args=("first",))
    blocker.start()  # the worker is busy with it while the next two queue up: a batch of two
    time.sleep(0.01)
    pair = [threading.Thread(target=batcher.submit, args=(i,)) for i in ("a", "b")]
    for t in pair:
        t.start()
    time.sleep(0.1)  # after that batch of two, a straggler pair arrives 0.2 s apart: the worker waits
    late = [threading.Thread(target=batcher.submit, args=(i,)) for i in ("c",)]
    late[0].start()
    time.sleep(0.2)
    late.append(threading.Thread(target=batcher.submit, args=("d",)))
    late[1].start()
    for t in [blocker, *pair, *late]:
        t.join()
    assert list(batcher.batch_sizes) == [1, 1, 2, 2]
    batcher.close()


def test_micro_batcher_waits_for_items_still_being_prepared():
    """An item announced with submit_after joins the batch that is about to run while it is being
    prepared: the first item alone waits for it (a plain submit of the second would come too late,
    and the batch sizes would be [1, 1])."""
    first_queued = threading.Event()

    def run(items):
        return list(items)

    batcher = MicroBatcher(run, max_batch_size=4, arrival_wait_s=5.0)

    def slow_prepare():
        assert first_queued.wait(5)
        time.sleep(0.1)  # far longer than it takes a worker to pick up the first item
        return "second"

    second = threading.Thread(target=batcher.submit_after, args=(slow_prepare,))
    second.start()
    time.sleep(0.05)  # "second" is announced before "first" is queued
    first = threading.Thread(target=batcher.submit, args=("first",))
    first.start()
    time.sleep(0.02)
    first_queued.set()
    first.join()
    second.join()
    assert list(batcher.batch_sizes) == [2]

    def failing_prepare():
        raise ValueError("unreadable")

    with pytest.raises(ValueError, match="unreadable"):
        batcher.submit_after(failing_prepare)
    assert batcher._arriving == 0  # a failed preparation is no longer waited for
    start = time.monotonic()
    assert batcher.submit("alone") == "alone"
    assert time.monotonic() - start < 1.0
    batcher.close()


def test_micro_batcher_workers_run_batches_at_once():
    """Two workers run two batches at the same time (each batch waits for the other to start: one
    worker would time out); every item gets its own result and close() stops both workers."""
    both_running = threading.Barrier(2, timeout=5)

    def run(items):
        both_running.wait()  # raises BrokenBarrierError unless a second batch runs meanwhile
        return [i * 10 for i in items]

    batcher = MicroBatcher(run, max_batch_size=1, workers=2)
    results: dict[int, object] = {}

    def go(item):
        results[item] = batcher.submit(item, timeout=10)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: i * 10 for i in range(6)}
    assert len(batcher._threads) == 2 and list(batcher.batch_sizes) == [1] * 6
    batcher.close()
    for thread in batcher._threads:
        thread.join(timeout=5)
    assert not any(thread.is_alive() for thread in batcher._threads)
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(run, workers=0)


# ---------------------------------------------------------------------------------------------- service


def test_batched_captions_equal_one_by_one_with_mixed_beam_sizes(models, scenes):
    captioner, vqa, paths = models
    service = AppService(captioner, vqa, max_batch_size=8, checkpoints=paths)
    beams = [1, 3, 1, 5]
    items = list(zip(scenes, beams))
    batched = service._caption_batch([(captioner.prepare(image), image.size, beam) for image, beam in items])
    for (image, beam), out in zip(items, batched):
        (single,) = captioner.caption(image, beam_size=beam)
        assert out.text == single.text and out.tokens == single.tokens
        assert out.score == pytest.approx(single.score, abs=1e-4)
        np.testing.assert_allclose(out.attention, single.attention, atol=1e-5)
        assert out.attention.shape == (len(single.tokens), *captioner.grid)
        assert out.beam_size == beam and out.domain is not None and out.domain.out_of_domain
        assert out.domain.score == pytest.approx(single.domain.score, abs=1e-4)
    service.close()


def test_batched_answers_equal_one_by_one(models, scenes):
    captioner, vqa, paths = models
    service = AppService(captioner, vqa, checkpoints=paths)
    questions = ["what color is the circle?", "how many objects are there?", "is there a red square?",
                 "what shape is the blue object?"]
    batched = service._answer_batch([(vqa.prepare(image), image.size, q, 5) for image, q in zip(scenes, questions)])
    for image, question, out in zip(scenes, questions, batched):
        (single,) = vqa.answer(image, question)
        out.answers = out.answers[:5]
        assert [a for a, _ in out.answers] == [a for a, _ in single.answers]
        np.testing.assert_allclose([p for _, p in out.answers], [p for _, p in single.answers], atol=1e-5)
        np.testing.assert_allclose(out.attention, single.attention, atol=1e-5)
        assert len(single.answers) == 5 and out.domain is None  # the VQA checkpoint has no OOD stats
    out = service.answer(scenes[0], "what color is the 🟥 circle?", top_k=2)
    assert out.warnings and out.to_json()["warnings"] == out.warnings and len(out.answers) == 2
    service.close()


def test_caption_json_has_one_map_per_token(models, scenes):
    captioner, vqa, paths = models
    service = AppService(captioner, vqa, checkpoints=paths)
    data = service.caption(scenes[1], 2).to_json()
    assert isinstance(data["caption"], str) and data["caption"] == " ".join(data["tokens"])
    assert np.asarray(data["attention"]).shape == (len(data["tokens"]), *captioner.grid)
    assert data["out_of_domain"]["flagged"] is True and data["image_size"] == [112, 112]
    service.close()


# ---------------------------------------------------------------------------------------------- OOD hook


def test_ood_hook(models):
    captioner, vqa, _ = models
    assert vqa.ood is None and vqa.domain_checks(torch.zeros(2, 16, 8)) == [None, None]  # no statistics
    stats = OODStats(torch.zeros(8), torch.ones(8), threshold=2.0, quantile=0.99, heldout_pass_rate=0.99)
    near, far = stats.checks(torch.stack([torch.zeros(16, 8), torch.full((16, 8), 3.0)]))  # (B, P, D)
    assert not near.out_of_domain and near.message("captioner") is None
    assert far.out_of_domain and far.score == pytest.approx(9.0)  # mean squared z-score
    message = far.message("captioner")
    assert "Train on your own data" in message and "9.00" in message and "threshold 2.00" in message
    assert far.to_json() == {"score": pytest.approx(9.0), "threshold": 2.0, "flagged": True}
    assert stats.checks(torch.zeros(1, 4, 3)) == [None]  # features of another encoder
    assert captioner.ood is not None and captioner.ood.threshold == -1.0  # the tiny captioner's statistics
    assert DomainCheck(1.0, 2.0).message("VQA model") is None


def test_model_card_shows_training_data_and_test_figures(models):
    captioner, _, paths = models
    text = model_card("captioner", captioner.meta, paths["captioner"], None)
    assert "tiny random (tests)" in text and "| CIDEr | 0.0123 |" in text and "out-of-domain statistics" in text
    odd = model_card("vqa", {"training": "not a dict", "encoder": None, "grid": "x"}, None)
    assert "No test figures" in odd
    nested = model_card("vqa", {"training": {"config": {"lr": 1}, "test_metrics": {"overall": {"acc": 0.5}}}}, None)
    assert "overall.acc" in nested and "lr" not in nested


# ---------------------------------------------------------------------------------------------- command


def test_app_command_without_checkpoints_says_how_to_get_them(tmp_path, monkeypatch, capsys):
    from mmapp.cli import main

    monkeypatch.setenv("MMAPP_CHECKPOINTS", str(tmp_path))
    assert main(["app"]) == 3  # bad input: no checkpoint
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no captioner checkpoint at" in err and "mmapp train caption" in err


def test_app_py_does_nothing_on_import():
    import importlib.util

    spec = importlib.util.spec_from_file_location("app_module", Path(__file__).resolve().parents[1] / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # would launch (and block or exit) if it ran outside __main__
    assert module.__doc__.startswith("Serve the mmapp web app")


# ---------------------------------------------------------------------------------------------- examples


def test_examples_handle_a_missing_sample_folder_and_cache_the_photos(tmp_path):
    from mmapp.app.examples import photo_examples, scene_examples
    from mmapp.data.objects.real_photos import read_photo_specs

    assert scene_examples(tmp_path / "absent") == []
    (tmp_path / "scenes").mkdir()
    for i in range(3):
        write_scene(tmp_path / "scenes" / f"{i}.png", seed=i, size=64)
    assert [p.name for p in scene_examples(tmp_path / "scenes", limit=2)] == ["0.png", "1.png"]
    photos = photo_examples(tmp_path / "photos")
    names = [p.stem for p in photos]
    known = [s.name for s in read_photo_specs() if s.known]
    assert names[:4] == known[:4] == ["chelsea", "coffee", "astronaut", "rocket"]  # known things first
    assert not set(names) - {s.name for s in read_photo_specs()}
    assert Image.open(photos[0]).size == (451, 300)  # chelsea
    mtime = photos[0].stat().st_mtime_ns
    assert photo_examples(tmp_path / "photos")[0].stat().st_mtime_ns == mtime  # written once
