"""The inference API (Captioner, VQAModel) on tiny random checkpoints: input forms and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from mmapp.errors import ImageError, InputError
from mmapp.inference import Captioner, VQAModel, as_image_list

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def captioner(captioner_checkpoint) -> Captioner:
    return Captioner.from_checkpoint(captioner_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def vqa(vqa_checkpoint) -> VQAModel:
    return VQAModel.from_checkpoint(vqa_checkpoint, device="cpu")


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 40, 48, 3), dtype=np.uint8)  # (B, H, W, 3)


def _same_caption(a, b) -> bool:
    return a.tokens == b.tokens and abs(a.score - b.score) < 1e-5 and np.allclose(a.attention, b.attention,
                                                                                    atol=1e-5)


def test_as_image_list() -> None:
    batch = _images(3)
    assert len(as_image_list(batch)) == 3
    assert len(as_image_list(batch[0])) == 1
    assert len(as_image_list([batch[0], batch[1]])) == 2
    assert as_image_list("a.png") == ["a.png"]


def test_caption_single_list_and_4d_batch(captioner) -> None:
    batch = _images(3)
    single = captioner.caption(batch[1], beam_size=2, max_len=6)
    as_list = captioner.caption(list(batch), beam_size=2, max_len=6)
    as_array = captioner.caption(batch, beam_size=2, max_len=6)
    assert len(single) == 1 and len(as_list) == 3 and len(as_array) == 3
    assert _same_caption(single[0], as_list[1])
    assert all(_same_caption(a, b) for a, b in zip(as_list, as_array))
    H, W = captioner.grid
    for r in as_list:
        assert r.text == " ".join(r.tokens) and 0 <= len(r.tokens) <= 6
        assert r.attention.shape == (len(r.tokens), H, W)
        assert r.image_size == (48, 40)
        assert np.isfinite(r.score) and r.score <= 0


def test_caption_refuses_bad_settings_and_images(captioner, tmp_path) -> None:
    image = _images(1)[0]
    with pytest.raises(InputError, match="beam size must be a whole number from 1 to 10"):
        captioner.caption(image, beam_size=0)
    with pytest.raises(InputError, match="beam size"):
        captioner.caption(image, beam_size=11)  # the app's limit is the API's
    with pytest.raises(InputError, match="caption length limit"):
        captioner.caption(image, max_len=0)
    with pytest.raises(InputError, match="no images"):
        captioner.caption([])
    with pytest.raises(ImageError, match="not found"):
        captioner.caption(tmp_path / "missing.png")


def test_answer_single_list_and_one_image_many_questions(vqa) -> None:
    images = _images(3)
    questions = ["what color is the circle?", "how many squares are there?", "is there a red triangle?"]
    one = vqa.answer(images[0], questions[0], top_k=3)
    batched = vqa.answer(list(images), questions, top_k=3)
    many = vqa.answer(images[0], questions, top_k=3)
    assert len(one) == 1 and len(batched) == 3 and len(many) == 3
    assert [r.question for r in many] == questions
    assert _close(one[0], batched[0])
    for q, r in zip(questions, many):
        alone = vqa.answer(images[0], q, top_k=3)[0]
        assert _close(alone, r)
    H, W = vqa.grid
    for r in batched:
        probs = [p for _, p in r.answers]
        assert len(r.answers) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(a in vqa.answer_vocab.answers for a, _ in r.answers)
        assert r.attention.shape == (H, W) and r.glimpses.shape == (2, H, W)
        assert np.allclose(r.glimpses.sum(axis=(1, 2)), 1.0, atol=1e-5)
        assert np.allclose(r.attention, r.glimpses.mean(axis=0))


def _close(a, b) -> bool:
    return [x for x, _ in a.answers] == [x for x, _ in b.answers] and np.allclose(
        [p for _, p in a.answers], [p for _, p in b.answers], atol=1e-5) and np.allclose(a.glimpses, b.glimpses,
                                                                                        atol=1e-5)


def test_top_k_is_clamped_to_the_answer_vocabulary_and_limited(vqa) -> None:
    from mmapp.inference import MAX_TOP_K

    assert len(vqa.answer_vocab) < MAX_TOP_K
    (r,) = vqa.answer(_images(1)[0], "what color is the circle?", top_k=MAX_TOP_K)
    assert len(r.answers) == len(vqa.answer_vocab)
    assert sum(p for _, p in r.answers) == pytest.approx(1.0, abs=1e-5)
    for bad in (0, MAX_TOP_K + 1):
        with pytest.raises(InputError, match="top-k must be a whole number"):
            vqa.answer(_images(1)[0], "what color is the circle?", top_k=bad)


@pytest.mark.parametrize("question, message", [
    ("", "empty"),
    ("   \t\n ", "empty"),
    ("why " * 2500, "characters long"),
    ("?!.,", "has no words"),
])
def test_bad_questions_are_refused(vqa, question: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        vqa.answer(_images(1)[0], question)


def test_question_and_image_counts_must_match(vqa) -> None:
    with pytest.raises(InputError, match="2 images but 3 questions"):
        vqa.answer(list(_images(2)), ["what?", "how?", "why?"])


def test_unknown_words_map_to_unk_are_answered_with_a_warning_and_no_known_word_is_refused(vqa) -> None:
    vocab = vqa.vocab
    assert "zorblax" not in vocab and "quuxite" not in vocab
    assert vocab.encode_question("what color is the zorblax") == [
        vocab.id("what"), vocab.id("color"), vocab.id("is"), vocab.id("the"), vocab.unk_id]
    image = _images(1)[0]
    (a,) = vqa.answer(image, "what color is the zorblax?")
    (b,) = vqa.answer(image, "what color is the quuxite?")  # same ids: <unk> for either word
    assert _close(a, b)
    assert a.warnings == ["words the model does not know were ignored: 'zorblax'"]
    with pytest.raises(InputError, match="none of the question's words are known"):
        vqa.answer(image, "zorblax quuxite")
    # the evaluator's path (dataset questions, no check) still reads them as <unk>
    features, _ = vqa.encode(image)
    (c,) = vqa.answer_results(features, ["zorblax quuxite"])
    assert len(c.answers) == 5 and all(np.isfinite(p) for _, p in c.answers)


def test_decoded_images_are_not_decoded_again(captioner, monkeypatch) -> None:
    import mmapp.inference as inference
    import mmapp.inputs as inputs

    image = _images(1)[0]
    pil, warnings = captioner.read(image)  # numpy -> decoded once here
    assert warnings == [[]] and pil[0].mode == "RGB"
    calls = []
    monkeypatch.setattr(inference, "load_image", lambda src: calls.append(src))
    monkeypatch.setattr(inputs, "decode_image", lambda src: calls.append(src))
    (r,) = captioner.caption(pil[0])
    assert calls == [] and r.image_size == pil[0].size
    monkeypatch.undo()
    assert _same_caption(r, captioner.caption(image)[0])


def test_results_carry_the_domain_verdict_and_animation_warning(captioner, tmp_path) -> None:
    from PIL import Image

    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    (r,) = captioner.caption(tmp_path / "anim.gif")
    assert r.warnings == ["anim.gif is animated: only its first frame is used"]
    assert (r.domain is None) == (captioner.ood is None)
    assert r.messages()[: 1] == r.warnings and r.to_json()["warnings"] == r.warnings


def test_json_numbers_are_rounded_to_the_digits_asked(captioner, vqa) -> None:
    import json
    import re

    (caption,) = captioner.caption(_images(1)[0])
    (answer,) = vqa.answer(_images(1)[0], "what color is the circle?")
    for result in (caption, answer):
        text = json.dumps(result.to_json(digits=4))
        attention = text.split('"attention": ', 1)[1]
        assert re.search(r"\d\.\d{5,}", attention) is None  # not float32's 0.001120000029914081
        assert np.allclose(np.asarray(result.to_json(digits=4)["attention"]), result.attention, atol=5e-5)


def test_an_encoder_can_be_shared_between_models(captioner, captioner_checkpoint) -> None:
    again = Captioner.from_checkpoint(captioner_checkpoint, device="cpu", encoder=captioner.encoder)
    assert again.encoder is captioner.encoder
    image = _images(1)[0]
    assert _same_caption(again.caption(image)[0], captioner.caption(image)[0])


def test_a_checkpoint_older_than_an_encoder_field_still_shares_the_encoder(captioner, captioner_checkpoint,
                                                                         tmp_path) -> None:
    from mmapp.checkpoint import read_checkpoint, save_checkpoint

    tensors, meta = read_checkpoint(captioner_checkpoint)
    del meta["encoder"]["pixel_patch"]  # written before encoder.pixel_patch existed
    old = save_checkpoint(tmp_path / "old.safetensors", tensors, meta)
    again = Captioner.from_checkpoint(old, device="cpu", encoder=captioner.encoder)
    assert again.encoder is captioner.encoder and again.encoder.cfg.pixel_patch == 0


def test_unknown_device_is_an_input_error(captioner_checkpoint) -> None:
    with pytest.raises(InputError, match="unknown device"):
        Captioner.from_checkpoint(captioner_checkpoint, device="floppy")
