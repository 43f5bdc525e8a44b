"""Checkpoints: exact round trips, one clear error per kind of damage, atomic writes, training state."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mmapp.checkpoint import (flatten_state, load_head, read_checkpoint, read_meta, save_checkpoint, save_model,
                              unflatten_state)
from mmapp.errors import CheckpointError
from mmapp.images import load_image, preprocess
from mmapp.inference import Captioner, VQAModel
from mmapp.models.decoding import beam_search

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8) for i in range(n)]


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_captioner_round_trip_is_exact(tmp_path, make_tiny_captioner) -> None:
    """Weight for weight; outputs equal up to the float rounding of the inference encoder's folded
    BatchNorms (same words, scores and maps within 1e-5)."""
    encoder, decoder, vocab = make_tiny_captioner(seed=3)
    path = save_model(tmp_path / "cap.safetensors", "captioner", decoder, encoder, vocab, training={"epoch": 2})
    assert _no_temp_files(tmp_path)

    images = _images()
    with torch.no_grad():
        batch = torch.stack([preprocess(load_image(i), encoder.cfg) for i in images])
        expected = beam_search(decoder, encoder(batch), 3, 12, vocab.start_id, vocab.end_id, vocab.pad_id)

    model = Captioner.from_checkpoint(path, device="cpu")
    assert model.vocab == vocab and model.meta["training"] == {"epoch": 2}
    assert model.grid == tuple(encoder.grid_size())
    results = model.caption(images, beam_size=3, max_len=12)
    for b, r in enumerate(results):
        assert r.tokens == vocab.decode(expected.tokens[b].tolist())
        assert r.score == pytest.approx(float(expected.scores[b]), rel=1e-5, abs=1e-5)
        n = len(r.tokens)
        assert np.allclose(r.attention, expected.attention[b, :n].numpy().reshape(n, *model.grid), atol=1e-5)
    # the reloaded model is the saved one, weight for weight
    for (name, a), b in zip(decoder.state_dict().items(), model.head.state_dict().values()):
        assert torch.equal(a, b), name
    stored = read_checkpoint(path)[0]
    for name, a in encoder.state_dict().items():
        assert torch.equal(stored[f"encoder.{name}"], a), name


def test_vqa_round_trip_is_exact(tmp_path, make_tiny_vqa) -> None:
    """Same answers in the same order; probabilities and maps up to the folded BatchNorms' rounding."""
    encoder, net, vocab, answers = make_tiny_vqa(seed=4)
    path = save_model(tmp_path / "vqa.safetensors", "vqa", net, encoder, vocab, answers,
                      training={"max_question_len": 30})
    images, questions = _images(), ["what color is the circle?", "how many squares are there?"]
    ids = [vocab.encode_question(q) for q in questions]
    q = torch.zeros(2, max(map(len, ids)), dtype=torch.long)
    for row, i in enumerate(ids):
        q[row, : len(i)] = torch.tensor(i)
    with torch.no_grad():
        batch = torch.stack([preprocess(load_image(i), encoder.cfg) for i in images])
        logits, attention = net(encoder(batch), q, torch.tensor([len(i) for i in ids]))
    probs = logits.softmax(-1)

    model = VQAModel.from_checkpoint(path, device="cpu")
    assert model.answer_vocab == answers
    results = model.answer(images, questions, top_k=len(answers))
    for b, r in enumerate(results):
        got = dict(r.answers)
        assert [a for a, _ in r.answers] == [answers.answers[i] for i in probs[b].argsort(descending=True)]
        assert all(got[a] == pytest.approx(float(probs[b, i]), abs=1e-6) for i, a in enumerate(answers.answers))
        assert np.allclose(r.glimpses, attention[b].numpy().reshape(2, *model.grid), atol=1e-6)


def test_frozen_package_encoder_is_not_stored(tmp_path, make_tiny_captioner) -> None:
    """Frozen ImageNet weights come from their package: only the head is written."""
    from mmapp.config import EncoderConfig
    from mmapp.models.encoder import build_encoder

    _, decoder, vocab = make_tiny_captioner()
    encoder = build_encoder(EncoderConfig(input_size=64))
    path = save_model(tmp_path / "c.safetensors", "captioner", decoder, encoder, vocab)
    tensors, meta = read_checkpoint(path)
    assert not any(k.startswith("encoder.") for k in tensors)
    assert meta["encoder_weights_id"] == encoder.weights_id() != "random"
    head, _, _ = load_head(path, "captioner")
    assert not head.training


def _damaged(kind: str, tmp_path: Path, good: Path) -> Path:
    path = tmp_path / f"{kind}.safetensors"
    if kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "plain-safetensors":
        from safetensors.torch import save_file

        save_file({"weight": torch.zeros(3)}, str(path))
    elif kind == "missing":
        pass
    elif kind == "folder":
        path.mkdir()
    elif kind == "wrong-shape":
        tensors, meta = read_checkpoint(good)
        tensors["model.output.weight"] = torch.zeros(3, 3)
        save_checkpoint(path, tensors, meta)
    elif kind == "missing-tensor":
        tensors, meta = read_checkpoint(good)
        del tensors["model.output.bias"]
        save_checkpoint(path, tensors, meta)
    elif kind == "bad-config":
        tensors, meta = read_checkpoint(good)
        meta["model"]["no_such_field"] = 1
        save_checkpoint(path, tensors, meta)
    elif kind == "future-format":
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(1)}, str(path), metadata={"format": "mmapp", "format_version": "99",
                                                                "meta": "{}"})
    return path


@pytest.mark.parametrize("kind, message", [
    ("truncated", "truncated or corrupt"),
    ("random-bytes", "truncated or corrupt"),
    ("empty", "truncated or corrupt"),
    ("plain-safetensors", "not an mmapp checkpoint"),
    ("missing", "not found"),
    ("folder", "not a file"),
    ("wrong-shape", "output.weight"),
    ("missing-tensor", "output.bias"),
    ("bad-config", "no_such_field"),
    ("future-format", "upgrade mmapp"),
])
def test_damaged_checkpoint_gives_one_clear_error(kind: str, message: str, tmp_path, captioner_checkpoint) -> None:
    path = _damaged(kind, tmp_path, captioner_checkpoint)
    with pytest.raises(CheckpointError) as info:
        Captioner.from_checkpoint(path, device="cpu")
    error = info.value
    text = str(error)
    assert str(path) in text and message in text
    assert "\n" not in text
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_loading_the_wrong_kind_of_model(captioner_checkpoint, vqa_checkpoint) -> None:
    with pytest.raises(CheckpointError, match="holds a captioner model, not a vqa model") as info:
        VQAModel.from_checkpoint(captioner_checkpoint, device="cpu")
    assert str(captioner_checkpoint) in str(info.value)
    with pytest.raises(CheckpointError, match="holds a vqa model, not a captioner model"):
        Captioner.from_checkpoint(vqa_checkpoint, device="cpu")


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch) -> None:
    import mmapp.checkpoint

    path = save_checkpoint(tmp_path / "model.safetensors", {"w": torch.ones(4)}, {"version": "old"})
    old_bytes = path.read_bytes()

    def failing_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(mmapp.checkpoint, "save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"w": torch.zeros(4)}, {"version": "new"})
    assert path.read_bytes() == old_bytes
    assert _no_temp_files(tmp_path)
    assert read_meta(path) == {"version": "old"}


def test_save_replaces_the_old_file_and_leaves_no_temp_files(tmp_path) -> None:
    path = tmp_path / "sub" / "model.safetensors"
    save_checkpoint(path, {"w": torch.ones(2)}, {"n": 1})
    save_checkpoint(path, {"w": torch.full((2,), 7.0)}, {"n": 2})
    tensors, meta = read_checkpoint(path)
    assert meta == {"n": 2} and torch.equal(tensors["w"], torch.full((2,), 7.0))
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_tensors_are_refused(tmp_path, bad: float) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, {"w": torch.ones(3)}, {})
    with pytest.raises(CheckpointError, match="w has NaN or infinite values") as info:
        save_checkpoint(path, {"w": torch.tensor([1.0, bad, 2.0])}, {})
    assert str(path) in str(info.value)
    assert torch.equal(read_checkpoint(path)[0]["w"], torch.ones(3))
    assert _no_temp_files(tmp_path)


def test_optimizer_state_round_trips_through_a_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.8, 0.99))
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        optimizer.step()

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tree = flatten_state(optimizer.state_dict(), "optim", tensors)
    path = save_checkpoint(tmp_path / "train.safetensors", tensors, {"optim": tree})
    loaded_tensors, meta = read_checkpoint(path)
    restored = unflatten_state(json.loads(json.dumps(meta["optim"])), loaded_tensors)

    original = optimizer.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    assert isinstance(restored["param_groups"][0]["betas"], tuple)
    assert set(restored["state"]) == set(original["state"]) == {0, 1}
    for i, state in original["state"].items():
        for name, value in state.items():
            assert torch.equal(restored["state"][i][name], value), (i, name)

    # a twin model resumed from the checkpoint takes the very same next step
    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict({k[len("model."):]: v for k, v in loaded_tensors.items() if k.startswith("model.")})
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=0.5)
    twin_optimizer.load_state_dict(restored)
    x = torch.randn(5, 4)
    for m, opt in ((model, optimizer), (twin, twin_optimizer)):
        opt.zero_grad()
        m(x).pow(2).sum().backward()
        opt.step()
    assert torch.equal(model.weight, twin.weight) and torch.equal(model.bias, twin.bias)


def test_rng_states_round_trip(tmp_path) -> None:
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(5)
    generator = np.random.default_rng(11)
    torch.rand(3), np.random.rand(3), generator.random(3)  # move away from the seeded states
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
              "generator": generator.bit_generator.state}
    tensors: dict[str, torch.Tensor] = {}
    tree = flatten_state(states, "rng", tensors)
    path = save_checkpoint(tmp_path / "rng.safetensors", tensors, {"rng": tree})
    expected = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)], generator.random(5))

    loaded_tensors, meta = read_checkpoint(path)
    restored = unflatten_state(meta["rng"], loaded_tensors)
    torch.set_rng_state(restored["torch"])
    np.random.set_state(restored["numpy"])
    random.setstate(restored["python"])
    generator.bit_generator.state = restored["generator"]
    assert torch.equal(torch.rand(5), expected[0])
    assert np.array_equal(np.random.rand(5), expected[1])
    assert [random.random() for _ in range(5)] == expected[2]
    assert np.array_equal(generator.random(5), expected[3])


def test_flatten_refuses_what_it_cannot_store() -> None:
    with pytest.raises(TypeError, match="at x.a"):
        flatten_state({"a": object()}, "x", {})
    with pytest.raises(TypeError, match="dict keys"):
        flatten_state({(1, 2): 3}, "x", {})


def test_save_model_refuses_unknown_kinds(tmp_path, make_tiny_captioner) -> None:
    encoder, decoder, vocab = make_tiny_captioner()
    with pytest.raises(ValueError, match="unknown model kind"):
        save_model(tmp_path / "x.safetensors", "detector", decoder, encoder, vocab)
    assert not (tmp_path / "x.safetensors").exists()

