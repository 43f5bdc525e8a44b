"""Graphed training steps (``mmapp.speed.graphed``) on the CPU: the step a CUDA graph records is checked here
against the plain engine (same losses, same weights), its non-finite guard (the update is skipped on
the device, the epoch then stops), and its bookkeeping (which shapes run eagerly, which are replayed,
the batch copied into the graph's buffers) with a stand-in for the graph. That a real capture replays
what it recorded is checked on a GPU by ``python -m benchmarks.gpu_epoch --cuda-graphs --check-steps 8``
(see docs/benchmarks.md).
"""

from __future__ import annotations

import pytest
import torch

from mmapp.config import CaptionDecoderConfig
from mmapp.engine import Precision, train_one_epoch
from mmapp.errors import NonFiniteLossError
from mmapp.losses import caption_loss, caption_loss_terms
from mmapp.models.caption_decoder import build_caption_decoder
from mmapp.speed.graphed import GraphedTrainStep, batch_key, train_graphed_epoch
from mmapp.speed.teacher_forcing import use_training_path
from mmapp.vocab import Vocab

CPU = torch.device("cpu")
OFF = Precision(None, False)


pytestmark = pytest.mark.usefixtures("one_thread")


def _decoder(dropout: float = 0.0):
    torch.manual_seed(0)
    cfg = CaptionDecoderConfig(vocab_size=30, encoder_dim=12, embed_dim=8, attention_dim=8, hidden_dim=16,
                               dropout=dropout)
    return build_caption_decoder(cfg)


def _batch(seed: int, captions: int = 6, images: int = 3, length: int = 9) -> dict:
    """Padded captions of different lengths, several captions per image (``image_index``)."""
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(2, length - 1, (captions,), generator=g)
    words[0] = length - 2  # one caption fills the batch's length
    tokens = torch.randint(4, 30, (captions, length), generator=g)
    positions = torch.arange(length)
    tokens[positions > words.unsqueeze(1)] = Vocab.pad_id
    tokens[positions == (words + 1).unsqueeze(1)] = Vocab.end_id
    tokens[:, 0] = Vocab.start_id
    return {"visual": torch.rand(images, 4, 12, generator=g), "captions": tokens,
            "image_index": torch.arange(captions) % images}


def _terms(model, b):
    logits, alphas = model(b["visual"], b["captions"][:, :-1], b["image_index"])
    loss, terms = caption_loss_terms(logits, alphas, b["captions"][:, 1:], Vocab.pad_id, 0.5)
    return loss, terms, b["captions"].shape[0]


def _plain(model, b):
    logits, alphas = model(b["visual"], b["captions"][:, :-1], b["image_index"])
    loss, stats = caption_loss(logits, alphas, b["captions"][:, 1:], Vocab.pad_id, 0.5)
    return loss, stats, b["captions"].shape[0]


def _adam(model):
    return torch.optim.Adam(model.parameters(), lr=0.01, fused=True)


def test_graphed_step_trains_like_the_plain_engine() -> None:
    batches = [_batch(s) for s in range(4)]
    plain = _decoder()
    plain_opt = _adam(plain)
    plain_stats = train_one_epoch(plain, batches, _plain, plain_opt, None, CPU, OFF, 0.5)

    graphed_model = _decoder()
    use_training_path(graphed_model, "static")
    step = GraphedTrainStep(graphed_model, _terms, _adam(graphed_model), OFF, 0.5, CPU)
    stats = train_graphed_epoch(graphed_model, batches, step, None, CPU)

    for name in ("loss", "xent", "att_penalty"):
        assert stats[name] == pytest.approx(plain_stats[name], rel=1e-5), name
    assert stats["steps"] == 4 and step.eager_steps == 4 and step.graphs == 0  # nothing captured on a CPU
    for (name, a), b in zip(plain.named_parameters(), graphed_model.parameters()):
        if name != "attention.score.bias":  # its gradient is 0 (softmax ignores a shift): Adam scales rounding up
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(plain.output.weight, _decoder().output.weight)  # and they did train


def test_a_non_finite_step_leaves_weights_and_moments_alone_and_stops_the_epoch() -> None:
    model = _decoder()
    use_training_path(model, "static")
    step = GraphedTrainStep(model, _terms, _adam(model), OFF, 0.5, CPU)
    step(_batch(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = [{k: v.clone() for k, v in s.items()} for s in step.optimizer.state.values()]
    bad = _batch(1)
    bad["visual"][0, 0, 0] = float("nan")
    loss, _, _ = step(bad)
    assert not torch.isfinite(loss) and step.skipped.item() == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for old, state in zip(moments, step.optimizer.state.values()):
        for k, v in state.items():
            assert torch.equal(v, old[k]), k  # the step count too: the skipped step did not happen
    step(_batch(2))  # a finite step afterwards updates again
    assert not torch.equal(model.output.weight, before["output.weight"])
    with pytest.raises(NonFiniteLossError, match="1 of the first 3 steps"):
        train_graphed_epoch(model, [_batch(3), bad, _batch(4)], step, None, CPU, check_every=50)


class _StandInGraph:
    """Records nothing: replaying runs the step on the static buffers and writes the outputs in place,
    which is what a CUDA graph's replay does to the memory it captured."""

    def __init__(self, run, outputs):
        self.run, self.outputs, self.replays = run, outputs, 0

    def replay(self):
        loss, terms, _ = self.run()
        self.outputs[0].copy_(loss)
        for name, t in terms.items():
            self.outputs[1][name].copy_(t)
        self.replays += 1


def test_shapes_run_eagerly_until_seen_warmup_times_then_replay_with_the_new_batch(monkeypatch) -> None:
    model = _decoder()
    use_training_path(model, "static")
    step = GraphedTrainStep(model, _terms, _adam(model), OFF, 0.5, CPU, warmup=2)
    step.capture = True  # as on a GPU, with the graph stood in for

    def capture(batch):
        static = {name: t.clone() for name, t in batch.items()}
        outputs = (torch.zeros(()), {"xent": torch.zeros(()), "att_penalty": torch.zeros(())}, 6)
        step.optimizer.zero_grad(set_to_none=True)
        return _StandInGraph(lambda: step._eager(static), outputs), static, outputs

    monkeypatch.setattr(step, "_capture", capture)
    reference = _decoder()
    use_training_path(reference, "static")
    ref_step = GraphedTrainStep(reference, _terms, _adam(reference), OFF, 0.5, CPU)
    short, long = [_batch(s, length=7) for s in range(5)], [_batch(10 + s, length=9) for s in range(3)]
    plan = [short[0], long[0], short[1], short[2], short[3], long[1], long[2], short[4]]
    for i, batch in enumerate(plan):
        loss, _, _ = step(batch)
        ref_loss, _, _ = ref_step(batch)
        assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5), i  # each batch's own loss, not a stale one
    assert step.graphs == 2 and step.replays == 4  # short: eager, eager, then 3 replays; long: eager x2, 1 replay
    assert batch_key(short[0]) != batch_key(long[0])
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_what_a_graphed_step_refuses() -> None:
    model = _decoder()
    with pytest.raises(ValueError, match="fused optimizer"):
        GraphedTrainStep(model, _terms, torch.optim.Adam(model.parameters()), OFF, 1.0, CPU)
    with pytest.raises(ValueError, match="CUDA"):
        GraphedTrainStep(model, _terms, _adam(model), OFF, 1.0, CPU, capture=True)
    with pytest.raises(ValueError, match="GradScaler"):
        GraphedTrainStep(model, _terms, _adam(model), Precision(torch.float16, True), 1.0, CPU)
    step = GraphedTrainStep(model, _terms, _adam(model), OFF, 1.0, CPU)
    scheduler = torch.optim.lr_scheduler.LambdaLR(step.optimizer, lambda s: 1.0)
    with pytest.raises(ValueError, match="tensor learning rate"):
        train_graphed_epoch(model, [_batch(0)], step, scheduler, CPU)
