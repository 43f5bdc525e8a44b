"""``Traced``: a module's method through a TorchScript trace, one per input shape, the batch size free."""

from __future__ import annotations

import copy
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmapp.config import EncoderConfig
from mmapp.models.encoder import build_encoder
from mmapp.models.traced import Traced


class SamePad(nn.Module):
    """Pads from the input's Python-side shape (baked into a trace), as the encoder's "same" convolutions do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)

    def pad_then_conv(self, x: Tensor) -> Tensor:
        extra = max(3 - x.shape[-1] % 2 - 1, 0)
        return torch.relu(self.conv(F.pad(x, (extra // 2, extra - extra // 2) * 2)))

    def flat_to_traced_batch(self, x: Tensor) -> Tensor:
        return self.conv(x).view(int(x.shape[0]), -1)  # int(): the trace keeps the batch size it saw


def _c_calls(fn, *args) -> int:
    """How many calls from Python into C (torch's operations among them) ``fn(*args)`` makes."""
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        calls += event == "c_call"

    sys.setprofile(count)
    try:
        fn(*args)
    finally:
        sys.setprofile(None)
    return calls


@torch.inference_mode()
def test_traced_equals_the_method_bitwise_at_every_batch_size() -> None:
    torch.manual_seed(0)
    module = SamePad().eval()
    traced = Traced(module, "pad_then_conv")
    x = torch.randn(5, 3, 17, 17)
    for batch in (3, 1, 5, 2, 3):  # traced at 3, then reused for the others
        assert torch.equal(traced(x[:batch]), module.pad_then_conv(x[:batch]))
    assert len(traced._traces) == 1 and next(iter(traced._traces.values())) is not None
    traced(torch.randn(2, 3, 20, 20))  # another image size: its own trace
    assert len(traced._traces) == 2


@torch.inference_mode()
def test_a_method_that_fixes_the_batch_size_runs_as_it_is() -> None:
    module = SamePad().eval()
    traced = Traced(module, "flat_to_traced_batch")
    x = torch.randn(4, 3, 9, 9)
    for batch in (2, 4, 1):
        assert torch.equal(traced(x[:batch]), module.flat_to_traced_batch(x[:batch]))
    assert list(traced._traces.values()) == [None]  # the check at another batch size refused the trace


def test_copies_start_without_traces() -> None:
    module = SamePad().eval()
    traced = Traced(module, "pad_then_conv")
    with torch.inference_mode():
        traced(torch.randn(2, 3, 9, 9))
    copied = copy.deepcopy(traced)
    assert copied._traces == {} and copied.method == "pad_then_conv" and copied.module is not module


@torch.inference_mode()
def test_a_folded_encoder_on_the_cpu_calls_into_torch_a_few_times_a_forward() -> None:
    encoder = build_encoder(EncoderConfig(weights="none", input_size=64)).eval()
    x = torch.randn(3, 3, 64, 64)
    expected = encoder(x)
    encoder.fold_batchnorm()
    eager = _c_calls(encoder._maps, x.contiguous(memory_format=torch.channels_last))
    encoder(x)  # the first call makes the trace
    through_trace = _c_calls(encoder, x)
    assert eager > 200 and through_trace < 30, (eager, through_trace)
    assert torch.allclose(encoder(x), expected, rtol=1e-3, atol=1e-4)  # folding's rounding, nothing more
    with torch.enable_grad():
        assert _c_calls(encoder, x) > 200  # where gradients are wanted, no trace
