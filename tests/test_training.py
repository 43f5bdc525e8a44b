"""Training from the command line (``mmapp train caption|vqa``) on the official-format COCO / VQA v2
fixtures: the loss goes down and the run folder holds what it should; resuming (between epochs,
mid-epoch, after SIGKILL) ends on exactly the weights of an uninterrupted run; a NaN loss stops
the run without a checkpoint; bad data gives one clear error line.

Everything is tiny (64x64 inputs -> 4x4 grids, 16-32 wide heads, 3 train images) and on the CPU.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmapp.checkpoint import prefixed, read_checkpoint
from mmapp.cli import main

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT / "datasets" / "fixtures" / "coco"
CAPTIONS_TRAIN = COCO / "annotations" / "captions_train2014.json"
CAPTIONS_VAL = COCO / "annotations" / "captions_val2014.json"
QUESTIONS = COCO / "vqa" / "v2_OpenEnded_mscoco_train2014_questions.json"
ANSWERS = COCO / "vqa" / "v2_mscoco_train2014_annotations.json"
COMMON = ["train.device=cpu", "train.amp=off", "train.warmup_steps=0", "train.val_beam_size=1", "--quiet"]


@pytest.fixture(scope="session")
def coco_cache(tmp_path_factory) -> Path:
    """Feature cache of the 5 fixture images (packaged EfficientNet-Lite0 weights, 64x64 input)."""
    out = tmp_path_factory.mktemp("coco_features")
    assert main(["features", "--images", str(COCO), "--out", str(out), "encoder.input_size=64",
                 "--workers", "0", "--quiet"]) == 0
    return out


@pytest.fixture(autouse=True)
def _torch_settings():
    """One thread (tiny models only lose from threads on a busy machine); ``train.deterministic``
    switches a process-wide torch flag: keep both out of other tests."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def caption_args(out: Path, cache: Path, *extra: str) -> list[str]:
    return ["train", "caption", "--out", str(out), f"data.features={cache}", f"data.train_captions={CAPTIONS_TRAIN}",
            f"data.val_captions={CAPTIONS_VAL}", "data.min_word_freq=1", "train.batch_size=4",
            "decoder.embed_dim=16", "decoder.hidden_dim=32", "decoder.attention_dim=16", *COMMON, *extra]


def vqa_args(out: Path, cache: Path, *extra: str) -> list[str]:
    return ["train", "vqa", "--out", str(out), f"data.features={cache}", f"data.train_questions={QUESTIONS}",
            f"data.train_annotations={ANSWERS}", f"data.val_questions={QUESTIONS}", f"data.val_annotations={ANSWERS}",
            "train.batch_size=4", "vqa.embed_dim=8", "vqa.question_dim=16", "vqa.attention_dim=16",
            "vqa.hidden_dim=32", *COMMON, *extra]


def vqa_args_answering(out: Path, cache: Path, answers: list[str], *extra: str) -> list[str]:
    """``vqa_args`` with the fixture's five annotations' answers renamed to ``answers`` (written beside ``out``)."""
    annotations = json.loads(ANSWERS.read_text())
    for a, name in zip(annotations["annotations"], answers, strict=True):
        a["multiple_choice_answer"] = name
        a["answers"] = [{**x, "answer": name} for x in a["answers"]]
    renamed = out.parent / f"{out.name}_annotations.json"
    renamed.write_text(json.dumps(annotations))
    return [a.replace(str(ANSWERS), str(renamed)) for a in vqa_args(out, cache, *extra)]


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def model_tensors(path: Path) -> dict[str, torch.Tensor]:
    tensors, _ = read_checkpoint(path)
    return prefixed(tensors, "model")


def assert_same_weights(a: Path, b: Path) -> None:
    ta, tb = model_tensors(a), model_tensors(b)
    assert ta.keys() == tb.keys() and ta
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"tensors differ after resuming: {different[:5]}"


# ------------------------------------------------------------------------------------------ training


def test_caption_training_from_cli(tmp_path, coco_cache):
    from mmapp.config import load_config
    from mmapp.inference import Captioner
    from mmapp.run_config import RunConfig

    run = tmp_path / "caption"
    assert main(caption_args(run, coco_cache, "train.epochs=5", "train.batch_size=1", "train.lr=2e-2",
                             "train.schedule=constant", "decoder.dropout=0")) == 0
    assert {p.name for p in run.iterdir()} == {"config.yaml", "best.safetensors", "last.safetensors",
                                              "metrics.jsonl", "curves.png"}
    rows = history(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    losses, xent = [r["train"]["loss"] for r in rows], [r["train"]["xent"] for r in rows]
    # the attention regulariser has a floor of about 3.6 here (16 cells, ~8 words): watch the words
    assert losses[-1] < losses[0] and xent[-1] < 0.9 * xent[0], (losses, xent)
    assert all({"CIDEr", "Bleu_4"} <= r["val"].keys() and r["train"]["steps"] == 3 for r in rows)  # 3 images
    cfg = load_config(RunConfig, run / "config.yaml")
    assert cfg.task == "caption" and cfg.train.epochs == 5 and cfg.decoder.hidden_dim == 32
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    _, meta = read_checkpoint(run / "best.safetensors")
    best_epoch = max(rows, key=lambda r: r["val"]["CIDEr"])["epoch"]  # the first of equal scores
    assert meta["training"]["epoch"] == best_epoch and "train_state" not in meta
    captioner = Captioner.from_checkpoint(run / "best.safetensors", device="cpu")
    result = captioner.caption(COCO / "val2014" / "COCO_val2014_000000000042.jpg", beam_size=2)[0]
    assert result.attention.shape == (len(result.tokens), 4, 4)
    assert all(w in captioner.vocab for w in result.tokens)


def test_vqa_training_from_cli(tmp_path, coco_cache):
    from mmapp.inference import VQAModel

    run = tmp_path / "vqa"
    assert main(vqa_args(run, coco_cache, "train.epochs=5", "train.batch_size=1", "train.lr=3e-2",
                         "train.schedule=constant", "vqa.dropout=0")) == 0
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "best.safetensors", "last.safetensors",
                                              "metrics.jsonl", "curves.png"}
    rows = history(run)
    losses = [r["train"]["loss"] for r in rows]
    assert len(rows) == 5 and losses[-1] < 0.85 * losses[0], losses
    assert all(0.0 <= r["val"]["accuracy"] <= 1.0 and "acc_how many" in r["val"] for r in rows)
    model = VQAModel.from_checkpoint(run / "best.safetensors", device="cpu")
    result = model.answer(COCO / "train2014" / "COCO_train2014_000000000025.jpg", "how many cups are there?")[0]
    assert result.attention.shape == (4, 4)
    assert all(a in model.answer_vocab.answers for a, _ in result.answers)
    probs = [p for _, p in result.answers]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-5


@pytest.mark.parametrize("name", ["coco_caption", "vqa_v2"])
def test_example_configs_name_the_official_files(tmp_path, coco_cache, name):
    """configs/*.yaml with data/coco replaced by the fixtures (official names, same layout) train."""
    text = (ROOT / "configs" / f"{name}.yaml").read_text()
    text = text.replace("data/coco/features/trainval2014", str(coco_cache)).replace("data/coco", str(COCO))
    config = tmp_path / f"{name}.yaml"
    config.write_text(text)
    task = "caption" if name == "coco_caption" else "vqa"
    tiny = ["decoder.embed_dim=16", "decoder.hidden_dim=32", "decoder.attention_dim=16", "data.min_word_freq=1"]
    if task == "vqa":  # the fixtures have no val2014 questions: validate on train
        tiny = ["vqa.embed_dim=8", "vqa.question_dim=16", "vqa.attention_dim=16", "vqa.hidden_dim=32",
                f"data.val_questions={QUESTIONS}", f"data.val_annotations={ANSWERS}"]
    run = tmp_path / "run"
    assert main(["train", task, "--config", str(config), "--out", str(run), "train.epochs=1", "train.batch_size=2",
                 "train.num_workers=0", *tiny, *COMMON]) == 0
    meta = read_checkpoint(run / "best.safetensors")[1]
    assert meta["training"]["dataset"] == ("dataset_coco.json" if task == "caption" else QUESTIONS.name)
    assert meta["grid"] == [4, 4]  # the cache's encoder (64x64 input), not the config's 224


# ------------------------------------------------------------------------------------------ resume


def test_resume_between_epochs_ends_on_identical_weights(tmp_path, coco_cache, monkeypatch):
    from mmapp.trainer import Run

    args = ("train.epochs=4", "train.deterministic=true", "train.num_workers=0", "train.lr=3e-3")
    assert main(caption_args(tmp_path / "a", coco_cache, *args)) == 0

    original = Run._train_epoch

    def stop_before_epoch_3(self):
        if self.epoch == 2:
            raise KeyboardInterrupt
        original(self)

    with monkeypatch.context() as m:
        m.setattr(Run, "_train_epoch", stop_before_epoch_3)
        assert main(caption_args(tmp_path / "b", coco_cache, *args)) == 130
    _, meta = read_checkpoint(tmp_path / "b" / "last.safetensors")
    assert meta["train_state"]["loop"]["epoch"] == 2 and len(history(tmp_path / "b")) == 2
    assert main(["train", "caption", "--resume", str(tmp_path / "b"), "--quiet"]) == 0

    assert_same_weights(tmp_path / "a" / "last.safetensors", tmp_path / "b" / "last.safetensors")
    a, b = history(tmp_path / "a"), history(tmp_path / "b")
    assert [r["train"]["loss"] for r in a] == [r["train"]["loss"] for r in b]
    assert [r["val"] for r in a] == [r["val"] for r in b]


def test_resume_mid_epoch_ends_on_identical_weights(tmp_path, coco_cache, monkeypatch):
    import mmapp.trainer as trainer

    # 3 training images in batches of 1: 3 steps an epoch; stop after step 4 = step 1 of epoch 2.
    args = ("train.epochs=3", "train.batch_size=1", "train.deterministic=true", "train.lr=3e-3")
    assert main(caption_args(tmp_path / "a", coco_cache, *args)) == 0

    original = trainer.train_one_epoch
    steps = []

    def interrupted_after_step_4(*a, **kw):
        bound = inspect.signature(original).bind(*a, **kw)
        on_step = bound.arguments["on_step"]

        def wrapped(step, stats):
            on_step(step, stats)  # checkpoints first (train.checkpoint_every=1)
            steps.append(step)
            if len(steps) == 4:
                raise KeyboardInterrupt

        bound.arguments["on_step"] = wrapped
        return original(*bound.args, **bound.kwargs)

    with monkeypatch.context() as m:
        m.setattr(trainer, "train_one_epoch", interrupted_after_step_4)
        assert main(caption_args(tmp_path / "b", coco_cache, *args, "train.checkpoint_every=1")) == 130
    loop = read_checkpoint(tmp_path / "b" / "last.safetensors")[1]["train_state"]["loop"]
    assert (loop["epoch"], loop["step_in_epoch"], loop["global_step"]) == (1, 1, 4)
    assert main(["train", "caption", "--resume", str(tmp_path / "b"), "--quiet"]) == 0

    assert_same_weights(tmp_path / "a" / "last.safetensors", tmp_path / "b" / "last.safetensors")
    assert [r["val"] for r in history(tmp_path / "a")] == [r["val"] for r in history(tmp_path / "b")]


@pytest.mark.parametrize("cuda_graphs", ["on", "off"])
@pytest.mark.parametrize("task", ["caption", "vqa"])
def test_resume_mid_epoch_is_exact_with_the_fast_path_on_and_off(tmp_path, coco_cache, monkeypatch, task, cuda_graphs):
    """``train.cuda_graphs=on`` on the CPU runs the fast path's steps eagerly (padded fixed-shape batches,
    tensor learning-rate schedule, fused Adam): its mid-epoch checkpoint resumes exactly, as the eager one does."""
    from mmapp.trainer import Run

    make_args = caption_args if task == "caption" else vqa_args
    # 3 training images in batches of 2: 2 steps an epoch (the second one short); stop after step 3
    args = ("train.epochs=3", "train.batch_size=2", "train.deterministic=true", "train.lr=3e-3",
            f"train.cuda_graphs={cuda_graphs}", "train.warmup_steps=2")
    assert main(make_args(tmp_path / "a", coco_cache, *args)) == 0
    original = Run._save

    def interrupted_after_step_3(self, name, with_state):
        original(self, name, with_state)
        if name == "last" and self.global_step == 3 and self.step_in_epoch == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Run, "_save", interrupted_after_step_3)
        assert main(make_args(tmp_path / "b", coco_cache, *args, "train.checkpoint_every=1")) == 130
    _, meta = read_checkpoint(tmp_path / "b" / "last.safetensors")
    loop = meta["train_state"]["loop"]
    assert (loop["epoch"], loop["step_in_epoch"], loop["global_step"]) == (1, 1, 3)
    assert dict(meta["train_state"]["scheduler"]["__dict__"])["last_epoch"] == 3  # both schedules count steps alike
    assert main(["train", task, "--resume", str(tmp_path / "b"), "--quiet"]) == 0

    assert_same_weights(tmp_path / "a" / "last.safetensors", tmp_path / "b" / "last.safetensors")
    a, b = history(tmp_path / "a"), history(tmp_path / "b")
    assert [r["val"] for r in a] == [r["val"] for r in b] and [r["lr"] for r in a] == [r["lr"] for r in b]
    assert ("graphs" in a[0]["train"]) == (cuda_graphs == "on")  # the fast path ran (eagerly: 0 graphs on a CPU)


def test_a_non_finite_loss_on_the_fast_path_writes_no_checkpoint_of_its_epoch(tmp_path, coco_cache, monkeypatch):
    """Without mid-epoch checkpoints the check at the epoch's end stops the run before its checkpoint."""
    import mmapp.tasks.vqa as vqa_task

    real_terms = vqa_task.vqa_loss_terms
    calls = []

    def terms_that_go_inf(*a, **kw):
        loss, terms = real_terms(*a, **kw)
        calls.append(1)
        return (loss + float("inf") if len(calls) == 3 else loss), terms

    monkeypatch.setattr(vqa_task, "vqa_loss_terms", terms_that_go_inf)
    run = tmp_path / "inf"
    # 2 steps an epoch: epoch 1 is finite and checkpointed, epoch 2's first step is not
    assert main(vqa_args(run, coco_cache, "train.epochs=3", "train.batch_size=2", "train.cuda_graphs=on")) == 3
    _, meta = read_checkpoint(run / "last.safetensors")
    assert meta["train_state"]["loop"]["epoch"] == 1 and len(history(run)) == 1


@pytest.mark.slow
def test_sigkill_leaves_a_loadable_checkpoint_and_resume_completes(tmp_path, coco_cache):
    run = tmp_path / "killed"
    args = vqa_args(run, coco_cache, "train.epochs=60", "train.batch_size=1", "train.checkpoint_every=1",
                    "train.schedule=constant")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mmapp", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (run / "metrics.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # checkpoints are being written every step now
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    tensors, meta = read_checkpoint(run / "last.safetensors")  # never half-written
    loop = meta["train_state"]["loop"]
    assert 1 <= loop["epoch"] < 60 and loop["global_step"] >= 2 and tensors
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())

    until = loop["epoch"] + 2
    assert main(["train", "vqa", "--resume", str(run), f"train.epochs={until}", "--quiet"]) == 0
    rows = history(run)
    assert [r["epoch"] for r in rows] == list(range(1, until + 1))
    assert read_checkpoint(run / "last.safetensors")[1]["train_state"]["loop"]["epoch"] == until


# ------------------------------------------------------------------------------------------ failures


@pytest.mark.parametrize("nan_at_call", [1, 3])
@pytest.mark.parametrize("path", ["eager", "fast"])
def test_nan_loss_stops_without_checkpoint(tmp_path, coco_cache, monkeypatch, capsys, nan_at_call, path):
    # the eager engine checks each loss; the fast path (train.cuda_graphs=on, run eagerly on a CPU)
    # skips a non-finite step on the device and stops at its next check
    import mmapp.tasks.caption as caption_task

    calls = []
    name = "caption_loss" if path == "eager" else "caption_loss_terms"
    real_loss = getattr(caption_task, name)

    def loss_that_goes_nan(*a, **kw):
        loss, stats = real_loss(*a, **kw)
        calls.append(1)
        return (loss * float("nan") if len(calls) == nan_at_call else loss), stats

    monkeypatch.setattr(caption_task, name, loss_that_goes_nan)
    run = tmp_path / "nan"
    switch = ["train.cuda_graphs=on"] if path == "fast" else []
    rc = main(caption_args(run, coco_cache, "train.epochs=3", "train.checkpoint_every=1", *switch))
    err = capsys.readouterr().err.strip()
    assert rc == 3 and len(calls) == nan_at_call, err
    said = "loss became nan" if path == "eager" else "became non-finite"
    assert err.startswith("mmapp train: error: epoch") and said in err and "\n" not in err
    if nan_at_call == 1:
        assert not [p.name for p in run.iterdir() if "safetensors" in p.name]
    else:  # the last checkpoint is the state after the step before, never the NaN one
        tensors, meta = read_checkpoint(run / "last.safetensors")
        assert meta["train_state"]["loop"]["global_step"] == nan_at_call - 1
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # statistics of inf grids
def test_nonfinite_features_stop_the_run(tmp_path, coco_cache, capsys):
    import shutil

    import numpy as np

    cache = tmp_path / "cache"
    shutil.copytree(coco_cache, cache)
    grids = np.load(cache / "features.npy", mmap_mode="r+")
    grids[1] = np.inf  # COCO_train2014_000000000025.jpg
    grids.flush()
    run = tmp_path / "run"
    assert main(vqa_args(run, cache, "train.epochs=2", "train.batch_size=1")) == 3  # bad input
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("mmapp train: error: epoch 1: the loss became nan at step"), err
    assert not list(run.glob("*.safetensors"))


def _write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def _captions(images: list[tuple[int, str]], captions: list[tuple[int, str]]) -> dict:
    return {"images": [{"id": i, "file_name": f} for i, f in images],
            "annotations": [{"id": n, "image_id": i, "caption": c} for n, (i, c) in enumerate(captions)]}


def test_bad_data_gives_one_clear_error_line(tmp_path, coco_cache, capsys):
    good = [(9, "COCO_train2014_000000000009.jpg")]
    cases = []
    # an image the feature cache does not hold
    missing = _write_json(tmp_path / "missing.json", _captions(good + [(77, "COCO_train2014_000000000077.jpg")],
                                                               [(9, "a woman"), (77, "a dog")]))
    cases.append((caption_args(tmp_path / "r1", coco_cache, f"data.train_captions={missing}"),
                  [str(missing), "image 77", "not in the feature cache"]))
    # an image file that is not in the folder (no cache: images go through the encoder)
    folder_args = [a for a in caption_args(tmp_path / "r2", coco_cache, f"data.train_captions={missing}")
                   if not a.startswith("data.features=")]
    cases.append((folder_args + [f"data.images={COCO / 'train2014'}", "encoder.input_size=64"],
                  [str(missing), "image 77", "file not found", "COCO_train2014_000000000077.jpg"]))
    # wrong schema: annotations without 'caption'
    schema = _write_json(tmp_path / "schema.json", {"images": [{"id": 9, "file_name": good[0][1]}],
                                                    "annotations": [{"id": 1, "image_id": 9, "text": "a woman"}]})
    cases.append((caption_args(tmp_path / "r3", coco_cache, f"data.train_captions={schema}"),
                  [str(schema), "annotation #0", "'caption'"]))
    # an empty caption
    empty = _write_json(tmp_path / "empty.json", _captions(good, [(9, "a woman"), (9, "  ")]))
    cases.append((caption_args(tmp_path / "r4", coco_cache, f"data.train_captions={empty}"),
                  [str(empty), "annotation #1", "empty caption"]))
    # a VQA question without its annotation
    questions = json.loads(QUESTIONS.read_text())
    questions["questions"].append({"image_id": 9, "question": "Is it day?", "question_id": 9999})
    orphan = _write_json(tmp_path / "questions.json", questions)
    cases.append((vqa_args(tmp_path / "r5", coco_cache, f"data.train_questions={orphan}"),
                  [str(orphan), "question_id 9999", "no annotation"]))
    # --resume of a folder without a checkpoint
    cases.append((["train", "caption", "--resume", str(tmp_path / "r1"), "--quiet"],
                  [f"file not found: {tmp_path / 'r1' / 'last.safetensors'}"]))
    for args, expected in cases:
        assert main(args) == 3, expected  # bad input
        err = capsys.readouterr().err.strip()
        assert err.startswith("mmapp train: error: ") and "\n" not in err, err
        assert all(e in err for e in expected), (expected, err)
        assert not any(p.suffix == ".safetensors" for p in Path(args[3]).glob("*")), err


def test_train_compile_is_refused_for_a_head_with_nothing_to_compile(tmp_path, coco_cache, capsys):
    assert main(vqa_args(tmp_path / "run", coco_cache, *COMMON, "train.epochs=1", "train.compile=true")) != 0
    assert "train.compile: VQANet has nothing to compile" in capsys.readouterr().err
