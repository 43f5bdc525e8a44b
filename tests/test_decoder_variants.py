"""Every caption decoder variant (lstm, gru, peephole, rnn, transformer; 1 and 2 layers) behind the one
interface: shapes, attention, overfitting, decoding, checkpoints and the app; and the Transformer's
incremental decoding against full recomputation."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mmapp.checkpoint import save_model
from mmapp.config import CaptionDecoderConfig
from mmapp.errors import InputError
from mmapp.inference import Captioner, VQAModel
from mmapp.losses import caption_loss
from mmapp.models.caption_decoder import build_caption_decoder
from mmapp.models.decoder_base import CaptionDecoder
from mmapp.models.decoding import beam_search, greedy_search
from mmapp.models.transformer_decoder import TransformerDecoder, sinusoidal_positions

pytestmark = pytest.mark.usefixtures("one_thread")

PAD, START, END = 0, 1, 2
B, T, P, D, V = 3, 6, 5, 10, 12
CELLS = ("lstm", "gru", "peephole", "rnn", "transformer")
VARIANTS = [(cell, layers) for cell in CELLS for layers in (1, 2)]


def make_decoder(cell: str, layers: int = 1, seed: int = 0, **changes) -> CaptionDecoder:
    torch.manual_seed(seed)
    cfg = CaptionDecoderConfig(**{"vocab_size": V, "encoder_dim": D, "embed_dim": 8, "attention_dim": 8,
                                  "hidden_dim": 16, "num_heads": 4, "dropout": 0.3, "cell": cell,
                                  "num_layers": layers, **changes})
    return build_caption_decoder(cfg)


def peaky(decoder: CaptionDecoder, end_bias: float = 0.0) -> CaptionDecoder:
    """Sharper word distributions than a random init gives, so decoding choices are clear-cut."""
    with torch.no_grad():
        decoder.output.weight.mul_(8.0)
        decoder.output.bias[END] += end_bias
    return decoder.eval()


def features_for(seed: int, batch: int) -> torch.Tensor:
    return torch.randn(batch, P, D, generator=torch.Generator().manual_seed(seed))


def trimmed(decoded, b: int) -> list[int]:
    return decoded.tokens[b, : int(decoded.lengths[b])].tolist()


@pytest.mark.parametrize("cell, layers", VARIANTS)
def test_shapes_and_attention_sums(cell: str, layers: int) -> None:
    decoder = make_decoder(cell, layers).eval()
    features = features_for(0, B)
    logits, alphas = decoder(features, torch.randint(3, V, (B, T)))
    assert logits.shape == (B, T, V) and alphas.shape == (B, T, P)
    assert torch.allclose(alphas.sum(-1), torch.ones(B, T), atol=1e-5) and (alphas >= 0).all()

    memory = decoder.prepare(features)
    state = decoder.init_state(memory)
    for _ in range(2):
        step_logits, alpha, state = decoder.step(torch.full((B,), START), state, memory)
        assert step_logits.shape == (B, V) and alpha.shape == (B, P)
        assert torch.allclose(alpha.sum(-1), torch.ones(B), atol=1e-5)
    assert all(t.shape[0] == B for t in (*memory.values(), *state.values()))  # batch-first, for beam search


@pytest.mark.parametrize("cell, layers", VARIANTS)
def test_image_index_equals_repeated_features(cell: str, layers: int) -> None:
    decoder = make_decoder(cell, layers, project_dim=7).eval()
    features, image_index = features_for(1, 2), torch.tensor([1, 0, 1, 1])
    inputs = torch.randint(3, V, (4, T))
    logits, alphas = decoder(features, inputs, image_index)
    expected_logits, expected_alphas = decoder(features[image_index], inputs)
    assert logits.shape == (4, T, V)
    assert torch.allclose(logits, expected_logits, atol=1e-5) and torch.allclose(alphas, expected_alphas, atol=1e-6)


@pytest.mark.parametrize("layers, positional", [(1, "sinusoidal"), (2, "sinusoidal"), (2, "learned")])
def test_transformer_incremental_decoding_equals_full_recomputation(layers: int, positional: str) -> None:
    """``step`` with its key/value cache == ``forward`` over the decoded words, position by position."""
    decoder = peaky(make_decoder("transformer", layers, seed=3, positional=positional))
    features = features_for(3, 4)
    memory = decoder.prepare(features)
    state = decoder.init_state(memory)
    tokens = torch.full((4,), START)
    fed, step_logits, step_alphas = [], [], []
    for t in range(10):
        logits, alpha, state = decoder.step(tokens, state, memory)
        assert state["k0"].shape == (4, 4, t + 1, 4)  # (B, H, t + 1, d/H): one position more per step
        fed.append(tokens)
        step_logits.append(logits)
        step_alphas.append(alpha)
        tokens = logits.argmax(-1)
    inputs = torch.stack(fed, dim=1)  # (B, 10) <start> w1 .. w9
    assert len(set(inputs[:, 1:].flatten().tolist())) > 2  # a varied caption, not one word repeated
    full_logits, full_alphas = decoder(features, inputs)
    assert torch.allclose(torch.stack(step_logits, dim=1), full_logits, atol=1e-5)
    assert torch.allclose(torch.stack(step_alphas, dim=1), full_alphas, atol=1e-5)
    # a later word cannot change an earlier position's output (the mask is causal)
    changed = inputs.clone()
    changed[:, -1] = (changed[:, -1] + 1) % V
    assert torch.allclose(decoder(features, changed)[0][:, :-1], full_logits[:, :-1], atol=1e-5)


def test_transformer_map_is_the_last_layers_cross_attention_averaged_over_heads() -> None:
    decoder = make_decoder("transformer", 2).eval()
    seen = []
    decoder.layers[-1].cross_attention.register_forward_hook(lambda m, args, out: seen.append(out[1]))
    _, alphas = decoder(features_for(2, B), torch.randint(3, V, (B, T)))
    weights = seen[0]  # (B, H, T, P)
    assert weights.shape == (B, 4, T, P)
    assert not torch.allclose(weights[:, 0], weights[:, 1])  # the heads differ: the mean is not one head
    assert torch.allclose(alphas, weights.mean(dim=1), atol=1e-7)


@pytest.mark.parametrize("cell, layers", [("lstm", 1), ("gru", 1), ("peephole", 1), ("rnn", 1), ("transformer", 1),
                                          ("lstm", 2), ("transformer", 2)])
def test_overfits_one_batch(cell: str, layers: int) -> None:
    decoder = make_decoder(cell, layers, hidden_dim=32, embed_dim=16, attention_dim=16, dropout=0.0)
    features = features_for(4, 4)
    captions = torch.tensor([[4, 5, 6, 7, 2], [8, 9, 10, 2, 0], [11, 4, 8, 5, 2], [6, 6, 11, 2, 0]])
    inputs = torch.cat([torch.full((4, 1), START), captions[:, :-1]], dim=1)  # <start> w1 .. w_{T-1}
    optimizer = torch.optim.Adam(decoder.parameters(), lr=3e-3 if cell == "transformer" else 1e-2)
    first = None
    for _ in range(100):
        logits, alphas = decoder(features, inputs)
        loss, info = caption_loss(logits, alphas, captions, attention_weight=0.01)
        first = info["xent"] if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert info["xent"] < first / 50, f"cross-entropy only fell from {first:.3f} to {info['xent']:.3f}"
    decoded = greedy_search(decoder.eval(), features, max_len=8, start_id=START, end_id=END)
    for b in range(4):
        n = int(captions[b].ne(0).sum())
        assert trimmed(decoded, b) == captions[b, :n].tolist()


def test_transformer_gradients_reach_every_parameter() -> None:
    decoder = make_decoder("transformer", 2, project_dim=7, positional="learned").train()
    inputs = torch.randint(3, V, (B, T))
    targets = torch.cat([inputs[:, 1:], torch.full((B, 1), END)], dim=1)
    logits, alphas = decoder(features_for(5, B), inputs)
    caption_loss(logits, alphas, targets)[0].backward()
    for name, p in decoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached decoder.{name}"


@pytest.mark.parametrize("cell, layers", VARIANTS)
def test_beam_size_one_equals_greedy(cell: str, layers: int) -> None:
    decoder = peaky(make_decoder(cell, layers, seed=6), end_bias=1.0)
    features = features_for(6, 4)
    greedy = greedy_search(decoder, features, 12, START, END)
    beam = beam_search(decoder, features, 1, 12, START, END)
    assert torch.equal(greedy.tokens, beam.tokens) and torch.equal(greedy.lengths, beam.lengths)
    assert torch.allclose(greedy.scores, beam.scores, atol=1e-5)
    assert torch.allclose(greedy.attention, beam.attention, atol=1e-6)


class EndsPerImage(CaptionDecoder):
    """Wraps a decoder and favours ``<end>`` from an image-dependent step on, so that the captions of
    one batch end at different lengths (a random decoder alone ends almost always at once or never)."""

    def __init__(self, inner: CaptionDecoder) -> None:
        super().__init__()
        self.inner = inner

    def prepare(self, features):
        return {**self.inner.prepare(features), "end_step": features[:, :, 0].argmax(dim=1)}  # (B,) in 0..P-1

    def init_state(self, memory):
        return {**self.inner.init_state(memory), "t": torch.zeros_like(memory["end_step"])}

    def step(self, tokens, state, memory):
        t = state["t"]
        logits, alpha, inner_state = self.inner.step(tokens, {k: v for k, v in state.items() if k != "t"}, memory)
        logits = logits.clone()
        logits[:, END] += torch.where(t >= memory["end_step"], 6.0, -6.0)
        return logits, alpha, {**inner_state, "t": t + 1}


@pytest.mark.parametrize("cell, layers", [(c, 1) for c in CELLS] + [("transformer", 2)])
def test_batched_beam_search_equals_one_image_at_a_time(cell: str, layers: int) -> None:
    decoder = EndsPerImage(make_decoder(cell, layers, seed=7).eval())
    features = features_for(7, 6)
    batched = beam_search(decoder, features, 3, 10, START, END)
    lengths = set()
    for b in range(6):
        alone = beam_search(decoder, features[b: b + 1], 3, 10, START, END)
        n = int(alone.lengths[0])
        lengths.add(n)
        assert trimmed(batched, b) == trimmed(alone, 0)
        assert float(batched.scores[b]) == pytest.approx(float(alone.scores[0]), abs=1e-4)
        assert torch.allclose(batched.attention[b, :n], alone.attention[0, :n], atol=1e-5)
    assert len(lengths) >= 2  # captions of different lengths share the batch


def test_transformer_refuses_bad_configs_and_positions_past_max_len() -> None:
    with pytest.raises(ValueError, match="divisible by decoder.num_heads"):
        make_decoder("transformer", hidden_dim=18, num_heads=4)
    with pytest.raises(ValueError, match="positional"):
        make_decoder("transformer", positional="rotary")
    decoder = make_decoder("transformer", max_len=3).eval()
    assert isinstance(decoder, TransformerDecoder)
    memory = decoder.prepare(features_for(8, 1))
    state = decoder.init_state(memory)
    for _ in range(3):
        _, _, state = decoder.step(torch.tensor([START]), state, memory)
    with pytest.raises(InputError, match="max_len=3"):
        decoder.step(torch.tensor([START]), state, memory)
    # sinusoids: sin on even, cos on odd features; position 0 is (0, 1, 0, 1, ...)
    table = sinusoidal_positions(torch.arange(4), 6)
    assert torch.allclose(table[0], torch.tensor([0.0, 1, 0, 1, 0, 1]))
    assert table[3, 0] == pytest.approx(math.sin(3.0)) and table[3, 1] == pytest.approx(math.cos(3.0))


# ---------------------------------------------------------------------------------------------- checkpoints, app


def _images(n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8) for i in range(n)]


def _variant_checkpoint(tmp_path, make_tiny_captioner, cell: str, layers: int):
    encoder, decoder, vocab = make_tiny_captioner(seed=9, cell=cell, num_layers=layers, num_heads=4)
    peaky(decoder, end_bias=-1.0)  # longer captions than a near-uniform random init would give
    path = save_model(tmp_path / f"{cell}{layers}.safetensors", "captioner", decoder, encoder, vocab)
    return path, encoder, decoder, vocab


@pytest.mark.parametrize("cell, layers", [(c, 1) for c in CELLS] + [("lstm", 2), ("transformer", 2)])
def test_checkpoint_round_trip_gives_identical_captions(cell: str, layers: int, tmp_path, make_tiny_captioner) -> None:
    from mmapp.images import load_image, preprocess

    path, encoder, decoder, vocab = _variant_checkpoint(tmp_path, make_tiny_captioner, cell, layers)
    images = _images()
    with torch.no_grad():
        batch = torch.stack([preprocess(load_image(i), encoder.cfg) for i in images])
        expected = beam_search(decoder, encoder(batch), 3, 12, vocab.start_id, vocab.end_id, vocab.pad_id)
    model = Captioner.from_checkpoint(path, device="cpu")
    assert type(model.head) is type(decoder) and model.head.cfg == decoder.cfg
    results = model.caption(images, beam_size=3, max_len=12)
    for b, r in enumerate(results):
        assert r.tokens == vocab.decode(expected.tokens[b].tolist())
        assert r.score == pytest.approx(float(expected.scores[b]), rel=1e-5, abs=1e-5)  # folded BatchNorms: rounding
        n = len(r.tokens)
        assert np.allclose(r.attention, expected.attention[b, :n].numpy().reshape(n, *model.grid), atol=1e-5)
    assert any(len(r.tokens) > 1 for r in results)


@pytest.fixture(scope="module")
def tiny_vqa_path(tmp_path_factory):
    from tests.support.tiny import make_tiny_checkpoints

    return make_tiny_checkpoints(tmp_path_factory.mktemp("app"))[1]


def _data_url(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("cell", CELLS)
def test_a_checkpoint_of_every_variant_loads_in_the_app(cell: str, tmp_path, make_tiny_captioner,
                                                        tiny_vqa_path) -> None:
    """``build_demo`` around a checkpoint of each variant; its /caption endpoint function answers."""
    from mmapp.app.ui import build_demo

    path, *_ = _variant_checkpoint(tmp_path, make_tiny_captioner, cell, 2)
    captioner = Captioner.from_checkpoint(path, device="cpu")
    vqa = VQAModel.from_checkpoint(tiny_vqa_path, device="cpu")
    demo = build_demo(captioner, vqa, checkpoints={"captioner": path, "vqa": tiny_vqa_path})
    endpoint = next(f for f in demo.fns.values() if f.api_name == "caption")
    service = endpoint.fn.__wrapped__.__self__.service  # the handler's AppService, to close its batchers
    try:
        image = _images(1)[0]
        data = endpoint.fn({"path": None, "url": _data_url(image)}, 2)
        expected = captioner.caption(image, beam_size=2, max_len=20)[0]
    finally:
        service.close()
    assert data["caption"] == expected.text and data["tokens"] == expected.tokens and data["beam_size"] == 2
    attention = np.asarray(data["attention"])
    assert attention.shape == (len(expected.tokens), *captioner.grid)
    assert np.allclose(attention.sum(axis=(1, 2)), 1.0, atol=1e-3)

