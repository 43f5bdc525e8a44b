"""The recurrent decoder's training paths (``mmapp.speed.teacher_forcing``) compute what its plain
``forward`` computes: the same logits and attention at every step whose target is a word, the same
loss and the same gradients, with the padded steps zeroed (``shrink``, ``compile``) or left as
computed (``static``, for CUDA graphs); without a gradient every path shrinks.
"""

from __future__ import annotations

import pytest
import torch

from mmapp.config import CaptionDecoderConfig
from mmapp.losses import caption_loss
from mmapp.models.caption_decoder import build_caption_decoder
from mmapp.speed import teacher_forcing
from mmapp.speed.teacher_forcing import shrinking_forward, use_training_path

PAD, START, END = 0, 1, 2
RECURRENT = [("lstm", 1), ("lstm", 2), ("gru", 1), ("peephole", 2), ("rnn", 1)]
INPUTS = torch.tensor([[START, 5, 6, 7, 8, 9], [START, 5, END, PAD, PAD, PAD],
                       [START, 4, 4, END, PAD, PAD], [START, END, PAD, PAD, PAD, PAD]])  # (B, T)
TARGETS = torch.cat([INPUTS[:, 1:], torch.tensor([[END], [PAD], [PAD], [PAD]])], dim=1)  # (B, T)
IMAGE_INDEX = torch.tensor([0, 0, 1, 1])


def make_decoder(cell: str, layers: int, project_dim: int = 0):
    torch.manual_seed(0)
    cfg = CaptionDecoderConfig(vocab_size=12, encoder_dim=10, embed_dim=8, attention_dim=8, hidden_dim=16,
                               dropout=0.0, cell=cell, num_layers=layers, project_dim=project_dim)
    return build_caption_decoder(cfg)


def run(decoder, features):
    """logits, attention, loss and every parameter's gradient of one teacher-forced batch."""
    decoder.zero_grad()
    logits, alphas = decoder(features, INPUTS, IMAGE_INDEX)
    loss = caption_loss(logits, alphas, TARGETS, PAD, 0.5)[0]
    loss.backward()
    return logits, alphas, loss.item(), {n: p.grad.clone() for n, p in decoder.named_parameters()}


@pytest.fixture
def plain_compile(monkeypatch):
    """``compile`` with torch.compile stood in for by the identity: compiling is torch's job (and slow
    on a CPU); what is tested here is the all-steps loop and its mask."""
    monkeypatch.setattr(teacher_forcing.torch, "compile", lambda fn: fn)


@pytest.mark.parametrize("path", ["shrink", "compile", "static"])
@pytest.mark.parametrize("cell, layers", RECURRENT)
def test_every_training_path_computes_the_plain_forward(cell, layers, path, plain_compile) -> None:
    features = torch.randn(2, 5, 10, generator=torch.Generator().manual_seed(1))
    plain = make_decoder(cell, layers, project_dim=6 if layers == 2 else 0)
    fast = make_decoder(cell, layers, project_dim=6 if layers == 2 else 0)
    use_training_path(fast, path)
    assert fast.training_path is not None and plain.training_path is None
    logits, alphas, loss, grads = run(plain, features)
    f_logits, f_alphas, f_loss, f_grads = run(fast, features)

    real = TARGETS.ne(PAD)  # (B, T) steps whose target is a word or <end>
    assert (~real).any()
    torch.testing.assert_close(f_logits[real], logits[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f_alphas[real], alphas[real], rtol=1e-5, atol=1e-6)
    assert f_loss == pytest.approx(loss, rel=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(f_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    assert logits[~real].abs().sum() == 0 and alphas[~real].abs().sum() == 0  # the plain forward zeroes padding
    if path == "static":  # computed, not zeroed: no host synchronisation
        assert f_logits[~real].abs().sum() > 0
    else:
        assert f_logits[~real].abs().sum() == 0 and f_alphas[~real].abs().sum() == 0

    with torch.no_grad():  # evaluation: every path shrinks
        expected = shrinking_forward(plain, features, INPUTS, IMAGE_INDEX)[0]
        assert torch.equal(fast(features, INPUTS, IMAGE_INDEX)[0], expected)


def test_the_switch_turns_off_and_refuses_unknown_paths() -> None:
    decoder = make_decoder("lstm", 1)
    use_training_path(decoder, "shrink")
    use_training_path(decoder, "plain")
    assert decoder.training_path is None
    with pytest.raises(ValueError, match="plain, shrink, compile, static"):
        use_training_path(decoder, "fast")


def test_rows_that_go_on_after_end_are_not_zeroed() -> None:
    """Not a padded caption batch (a word after <end>): every path runs every step and zeroes nothing."""
    features = torch.randn(2, 5, 10)
    odd = INPUTS.clone()
    odd[1, 4] = 7  # <end> <pad> 7: goes on after its end
    plain, fast = make_decoder("lstm", 1), make_decoder("lstm", 1)
    use_training_path(fast, "shrink")
    logits = plain(features, odd, IMAGE_INDEX)[0]
    assert logits[1, 2:].abs().sum(-1).gt(0).all()
    torch.testing.assert_close(fast(features, odd, IMAGE_INDEX)[0], logits)
