"""Attention, caption decoder and VQA net: shapes, attention normalisation, gradients, overfitting."""

from __future__ import annotations

import pytest
import torch

from mmapp.config import CaptionDecoderConfig, VQAConfig
from mmapp.losses import caption_loss, vqa_loss
from mmapp.models.attention import AdditiveAttention
from mmapp.models.caption_decoder import build_caption_decoder
from mmapp.models.cells import CELLS, make_cell
from mmapp.models.decoding import greedy_search
from mmapp.models.vqa import VQANet

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, P, D, V = 3, 5, 6, 10, 12


def _decoder(**changes):
    cfg = CaptionDecoderConfig(**{"vocab_size": V, "encoder_dim": D, "embed_dim": 8, "attention_dim": 7,
                                  "hidden_dim": 9, "dropout": 0.0, **changes})
    return build_caption_decoder(cfg)


def _vqa(**changes) -> VQANet:
    cfg = VQAConfig(**{"vocab_size": V, "num_answers": 4, "encoder_dim": D, "embed_dim": 8, "question_dim": 9,
                       "attention_dim": 7, "glimpses": 2, "hidden_dim": 11, "dropout": 0.0, **changes})
    return VQANet(cfg)


def _questions() -> tuple[torch.Tensor, torch.Tensor]:
    questions = torch.tensor([[4, 5, 6, 7], [8, 9, 0, 0], [10, 0, 0, 0]])  # (B, L) padded with 0
    return questions, torch.tensor([4, 2, 1])


def test_attention_shapes_and_normalisation() -> None:
    torch.manual_seed(0)
    att = AdditiveAttention(feature_dim=D, query_dim=9, attention_dim=7)
    features = torch.randn(B, P, D)
    keys = att.project(features)
    context, alpha = att(features, keys, torch.randn(B, 9))
    assert keys.shape == (B, P, 7)
    assert context.shape == (B, D) and alpha.shape == (B, P)
    assert torch.allclose(alpha.sum(-1), torch.ones(B), atol=1e-6)
    assert (alpha >= 0).all()
    assert torch.allclose(context, torch.einsum("bp,bpd->bd", alpha, features), atol=1e-6)


@pytest.mark.parametrize("kind", CELLS)
def test_cells_share_one_interface(kind: str) -> None:
    cell = make_cell(kind, 5, 7)
    h, c = torch.randn(B, 7), torch.randn(B, 7)
    h2, c2 = cell(torch.randn(B, 5), (h, c))
    assert h2.shape == (B, 7) and c2.shape == (B, 7)
    if kind in ("gru", "rnn"):
        assert torch.equal(c2, c)  # cells without memory pass c through
    else:
        assert not torch.equal(c2, c)
    with pytest.raises(ValueError, match="unknown recurrent cell"):
        make_cell("bogus", 5, 7)


@pytest.mark.parametrize("cell, layers", [("lstm", 1), ("gru", 1), ("peephole", 2), ("rnn", 2)])
def test_decoder_shapes_and_attention_sums(cell: str, layers: int) -> None:
    torch.manual_seed(0)
    decoder = _decoder(cell=cell, num_layers=layers).eval()
    features = torch.randn(B, P, D)
    logits, alphas = decoder(features, torch.randint(3, V, (B, T)))
    assert logits.shape == (B, T, V) and alphas.shape == (B, T, P)
    assert torch.allclose(alphas.sum(-1), torch.ones(B, T), atol=1e-6)

    memory = decoder.prepare(features)
    state = decoder.init_state(memory)
    assert state["h"].shape == (B, layers, 9) and state["c"].shape == (B, layers, 9)
    step_logits, alpha, state2 = decoder.step(torch.full((B,), 1), state, memory)
    assert step_logits.shape == (B, V) and alpha.shape == (B, P)
    assert state2["h"].shape == state["h"].shape
    assert torch.allclose(alpha.sum(-1), torch.ones(B), atol=1e-6)


@pytest.mark.parametrize("deep_output, word_query", [(False, False), (True, False), (True, True)])
def test_step_by_step_equals_teacher_forcing(deep_output: bool, word_query: bool) -> None:
    """``step`` (used by decoding) and ``forward`` (used in training) compute the same model."""
    torch.manual_seed(0)
    decoder = _decoder(num_layers=2, deep_output=deep_output, word_query=word_query).eval()
    features, inputs = torch.randn(B, P, D), torch.randint(3, V, (B, T))
    logits, alphas = decoder(features, inputs)
    memory = decoder.prepare(features)
    state = decoder.init_state(memory)
    for t in range(T):
        step_logits, alpha, state = decoder.step(inputs[:, t], state, memory)
        assert torch.allclose(step_logits, logits[:, t], atol=1e-5)
        assert torch.allclose(alpha, alphas[:, t], atol=1e-6)


@pytest.mark.parametrize("cell, layers, project, deep", [("lstm", 1, 0, False), ("gru", 2, 0, False),
                                                         ("peephole", 1, 0, False), ("rnn", 1, 0, False),
                                                         ("lstm", 2, 6, False), ("lstm", 1, 6, True)])
@pytest.mark.parametrize("word_query", [False, True])
def test_gradients_reach_every_decoder_parameter(cell: str, layers: int, project: int, deep: bool,
                                                 word_query: bool) -> None:
    torch.manual_seed(0)
    decoder = _decoder(cell=cell, num_layers=layers, dropout=0.3, project_dim=project, deep_output=deep,
                       word_query=word_query).train()
    assert decoder.output.in_features == decoder.cfg.hidden_dim + (project if deep else 0)
    inputs = torch.randint(3, V, (B, T))
    targets = torch.cat([inputs[:, 1:], torch.full((B, 1), 2)], dim=1)
    logits, alphas = decoder(torch.randn(B, P, D), inputs)
    loss, info = caption_loss(logits, alphas, targets)
    loss.backward()
    assert set(info) == {"xent", "att_penalty"}
    for name, p in decoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached decoder.{name}"


def test_caption_loss_ignores_padding_and_penalises_uneven_attention() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, V)
    targets = torch.tensor([[4, 5, 2], [6, 2, 0]])
    uniform = torch.full((2, 3, P), 1 / P)
    loss, info = caption_loss(logits, uniform, targets, attention_weight=0.0)
    real = targets.ne(0)
    expected = torch.nn.functional.cross_entropy(logits[real], targets[real])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # padding logits do not matter
    changed = logits.clone()
    changed[1, 2] += 100.0
    assert caption_loss(changed, uniform, targets, attention_weight=0.0)[0].item() == pytest.approx(loss.item())
    # attention that always looks at one cell is penalised more than attention spread over all cells
    peaked = torch.zeros(2, 3, P)
    peaked[..., 0] = 1.0
    assert caption_loss(logits, peaked, targets)[1]["att_penalty"] > info["att_penalty"]


@pytest.mark.parametrize("project", [0, 6])
def test_decoder_image_index_equals_repeated_features(project: int) -> None:
    """Several captions per image: per-image work once, same result as one feature row per caption."""
    torch.manual_seed(0)
    decoder = _decoder(project_dim=project).eval()
    features, image_index = torch.randn(2, P, D), torch.tensor([1, 0, 1, 1])
    inputs = torch.randint(3, V, (4, T))
    logits, alphas = decoder(features, inputs, image_index)
    expected_logits, expected_alphas = decoder(features[image_index], inputs)
    assert logits.shape == (4, T, V) and alphas.shape == (4, T, P)
    assert torch.allclose(logits, expected_logits, atol=1e-6) and torch.allclose(alphas, expected_alphas, atol=1e-6)


VQA_VARIANTS = [dict(fusion="mul"), dict(fusion="concat"), dict(feature_norm="layer", coords=True, count=True),
                dict(feature_norm="layer", coords=True, count=True, relation=True),
                dict(feature_norm="layer", coords=True, count=True, relation=True, relation_gates=3, count_map=4),
                dict(feature_norm="layer", coords=True, count=True, count_map=4, count_context=5)]
VQA_IDS = ["mul", "concat", "layernorm-coords-count", "layernorm-coords-count-relation",
           "layernorm-coords-count-relation-gates-countmap", "layernorm-coords-count-countcontext"]


@pytest.mark.parametrize("options", VQA_VARIANTS[::2], ids=VQA_IDS[::2])
def test_vqa_image_index_equals_repeated_features(options: dict) -> None:
    torch.manual_seed(0)
    net = _vqa(**options).eval()
    features, image_index = torch.randn(2, 9, D), torch.tensor([1, 1, 0])  # a square 3 x 3 grid
    questions, lengths = _questions()
    logits, attention = net(features, questions, lengths, image_index)
    expected_logits, expected_attention = net(features[image_index], questions, lengths)
    assert torch.allclose(logits, expected_logits, atol=1e-6)
    assert torch.allclose(attention, expected_attention, atol=1e-6)
    # and the same gradients (the per-question copy of the keys is worked on in place)
    params = [p for p in net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(logits.square().sum() + attention[:, 0, 4].sum(), params, allow_unused=True)
    expected = torch.autograd.grad(expected_logits.square().sum() + expected_attention[:, 0, 4].sum(), params,
                                   allow_unused=True)
    for got, want in zip(grads, expected):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", VQA_VARIANTS, ids=VQA_IDS)
def test_vqa_shapes_attention_and_gradients(options: dict) -> None:
    torch.manual_seed(0)
    net = _vqa(dropout=0.2, **options).train()
    questions, lengths = _questions()
    logits, attention = net(torch.randn(B, 9, D), questions, lengths)  # a square 3 x 3 grid
    assert logits.shape == (B, 4) and attention.shape == (B, 2, 9)
    assert torch.allclose(attention.sum(-1), torch.ones(B, 2), atol=1e-6)
    targets = torch.tensor([[1.0, 0.3, 0, 0], [0, 0, 0.6, 0], [0, 0, 0, 1.0]])
    loss, _ = vqa_loss(logits, targets)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached vqa.{name}"


def test_count_context_lets_a_cell_see_its_neighbours_and_the_plain_count_map_does_not() -> None:
    torch.manual_seed(0)
    questions, lengths = _questions()
    features = torch.randn(B, 16, D)  # a 4 x 4 grid
    changed = features.clone()
    changed[:, 0] += 3.0  # cell (0, 0): a neighbour of cell (1, 1) = 5, three cells from (3, 3) = 15
    for context, reaches_neighbour in ((0, False), (6, True)):
        net = _vqa(count_map=4, count_context=context).eval()
        before = net(features, questions, lengths, None, True)[2]  # (B, P) count map logits
        after = net(changed, questions, lengths, None, True)[2]
        assert not torch.allclose(before[:, 0], after[:, 0])
        assert torch.allclose(before[:, 5], after[:, 5]) != reaches_neighbour
        assert torch.allclose(before[:, 15], after[:, 15])  # two 3x3 layers reach two cells, not three
    net = _vqa(count_map=4, count_context=6).train()
    net(features, questions, lengths, None, True)[2].sum().backward()  # the count map alone
    assert net.count_head.net[0].weight.grad.abs().sum() > 0
    assert net.attention.feature_proj.weight.grad is None  # it reads the joint features, does not train them
    with pytest.raises(ValueError, match="square grid"):
        _vqa(count_map=4, count_context=6)(torch.randn(B, 12, D), questions, lengths)
    with pytest.raises(ValueError, match="count_context"):
        _vqa(count_context=6)


def test_glimpse_offsets_are_where_one_glimpse_looked_minus_where_another_did() -> None:
    from mmapp.models.vqa import glimpse_offsets

    attention = torch.zeros(2, 3, 9)  # a 3 x 3 grid: cell p is at x = p % 3, y = p // 3, each in -1, 0, 1
    attention[0, 0, 0], attention[0, 1, 8], attention[0, 2, 4] = 1.0, 1.0, 1.0  # top-left, bottom-right, centre
    attention[1, :, :] = 1.0 / 9  # everywhere: the same place on average
    offsets = glimpse_offsets(attention)  # pairs (0, 1), (0, 2), (1, 2), each (dx, dy)
    assert offsets.shape == (2, 6)
    assert torch.allclose(offsets[0], torch.tensor([-2.0, -2.0, -1.0, -1.0, 1.0, 1.0]))
    assert torch.allclose(offsets[1], torch.zeros(6), atol=1e-6)
    with pytest.raises(ValueError, match="glimpses >= 2"):
        VQAConfig(vocab_size=10, num_answers=4, glimpses=1, relation=True)


def test_relation_gates_read_the_offsets_along_question_chosen_directions() -> None:
    from mmapp.models.vqa import glimpse_offsets

    torch.manual_seed(0)
    net = _vqa(relation=True, relation_gates=2, dropout=0.0).eval()  # 2 glimpses: one (dx, dy) pair
    with torch.no_grad():  # whatever the question: gate 0 reads -dx ("left of"), gate 1 reads +dy ("below")
        net.relation_gates.weight.zero_()
        net.relation_gates.bias.copy_(torch.tensor([-1.0, 0.0, 0.0, 1.0]))
    seen = {}
    net.classifier[0].register_forward_pre_hook(lambda m, args: seen.update(input=args[0]))
    questions, lengths = _questions()
    _, attention = net(torch.randn(B, 9, D), questions, lengths)
    offsets = glimpse_offsets(attention)  # (B, 2): (dx, dy)
    assert seen["input"].shape[1] == net.cfg.hidden_dim + 2
    assert torch.allclose(seen["input"][:, -2:], torch.stack([-offsets[:, 0], offsets[:, 1]], dim=1), atol=1e-6)
    with pytest.raises(ValueError, match="needs vqa.relation"):
        VQAConfig(vocab_size=10, num_answers=4, relation_gates=2)


def test_vqa_padding_does_not_change_the_answer() -> None:
    torch.manual_seed(0)
    net = _vqa().eval()
    features = torch.randn(1, P, D)
    short, _ = net(features, torch.tensor([[4, 5]]), torch.tensor([2]))
    padded, _ = net(features, torch.tensor([[4, 5, 0, 0, 0]]), torch.tensor([2]))
    assert torch.allclose(short, padded, atol=1e-6)


def test_vqa_loss_soft_targets_and_unanswerable_questions() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [9.0, -9.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.3, 0.9], [0.0, 0.0, 0.0]])  # the last one has no answer
    loss, _ = vqa_loss(logits, targets)
    logp = logits.log_softmax(-1)
    expected = (-logp[0, 0] - (0.25 * logp[1, 1] + 0.75 * logp[1, 2])) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_caption_decoder_overfits_one_batch() -> None:
    torch.manual_seed(0)
    decoder = _decoder(embed_dim=16, attention_dim=16, hidden_dim=32, dropout=0.0)
    features = torch.randn(4, P, D)
    captions = torch.tensor([[4, 5, 6, 7, 2], [8, 9, 10, 2, 0], [11, 4, 8, 5, 2], [6, 6, 11, 2, 0]])
    inputs = torch.cat([torch.full((4, 1), 1), captions[:, :-1]], dim=1)  # <start> w1 .. w_{T-1}
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    first = None
    for _ in range(100):
        logits, alphas = decoder(features, inputs)
        loss, info = caption_loss(logits, alphas, captions, attention_weight=0.01)
        first = info["xent"] if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert info["xent"] < first / 100, f"cross-entropy only fell from {first:.3f} to {info['xent']:.3f}"
    decoded = greedy_search(decoder.eval(), features, max_len=8, start_id=1, end_id=2)
    for b in range(4):
        n = int(captions[b].ne(0).sum())
        assert decoded.tokens[b, :n].tolist() == captions[b, :n].tolist()
        assert int(decoded.lengths[b]) == n


def test_vqa_net_overfits_one_batch() -> None:
    torch.manual_seed(0)
    net = _vqa(num_answers=6, hidden_dim=32)
    n = 8
    features = torch.randn(n, P, D)
    questions = torch.randint(4, V, (n, 5))
    lengths = torch.tensor([5, 3, 4, 2, 5, 1, 3, 4])
    questions[torch.arange(5).expand(n, 5) >= lengths.unsqueeze(1)] = 0
    answers = torch.tensor([0, 1, 2, 3, 4, 5, 1, 3])
    targets = torch.nn.functional.one_hot(answers, 6).float() * 0.9
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        logits, _ = net(features, questions, lengths)
        loss, _ = vqa_loss(logits, targets)
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < first / 20, f"loss only fell from {first:.3f} to {float(loss.detach()):.3f}"
    with torch.no_grad():
        logits, _ = net.eval()(features, questions, lengths)
    assert logits.argmax(-1).tolist() == answers.tolist()


def test_word_query_makes_the_attention_depend_on_the_word_just_written() -> None:
    """With ``word_query`` the attention at a step changes with the word read at that step (the
    same hidden state, another word); in Show, Attend and Tell it cannot."""
    torch.manual_seed(0)
    features = torch.randn(B, P, D)
    for word_query in (False, True):
        decoder = _decoder(word_query=word_query).eval()
        memory = decoder.prepare(features)
        state = decoder.init_state(memory)
        _, alpha_a, _ = decoder.step(torch.full((B,), 4), state, memory)
        _, alpha_b, _ = decoder.step(torch.full((B,), 5), state, memory)
        assert torch.allclose(alpha_a, alpha_b) != word_query
    with pytest.raises(ValueError, match="word_query"):
        CaptionDecoderConfig(vocab_size=V, cell="transformer", word_query=True)


@pytest.mark.parametrize("image_first", [False, True])
def test_vqa_layer_norm_scale_and_shift_applied_after_the_weighted_sums_change_nothing(image_first, monkeypatch):
    """``VQANet.normalise`` leaves the LayerNorm's scale and shift out of the grid and applies them
    after the glimpses, the readout and the mean (``ChannelAffine``): the same logits and gradients as
    the LayerNorm applied to the grid."""
    from mmapp.models import vqa as vqa_module

    torch.manual_seed(0)
    net = _vqa(feature_norm="layer", coords=True, count=True, relation=True, count_map=4, count_context=5,
               readout=True, image_first=image_first).train()
    with torch.no_grad():  # a LayerNorm far from the identity it starts as
        net.norm.weight.uniform_(0.5, 2.0)
        net.norm.bias.uniform_(-1.0, 1.0)
    features, image_index = torch.randn(2, 9, D), torch.tensor([1, 1, 0])
    questions, lengths = _questions()

    def logits_and_grads():
        net.zero_grad()
        logits, attention = net(features, questions, lengths, image_index)
        (logits.square().sum() + attention[:, 1, 3].sum()).backward()
        return logits.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    logits, grads = logits_and_grads()
    assert grads["norm.weight"].abs().sum() > 0 and grads["norm.bias"].abs().sum() > 0
    # the reference: the whole LayerNorm on the grid, nothing left to apply afterwards
    monkeypatch.setattr(vqa_module.VQANet, "normalise", lambda self, f: (self.norm(f), vqa_module.ChannelAffine()))
    expected_logits, expected_grads = logits_and_grads()
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-5, msg=name)
