"""The trainer's fast path (``train.cuda_graphs``, ``mmapp/speed/``) on the CPU: padded fixed-shape
batches give the unpadded batch's loss and gradients (captions and VQA), the tensor learning-rate
schedule sets LambdaLR's rate at every step and resumes from either's state, and the switch resolves
as documented. The whole runs (resume, non-finite losses) are in ``tests/test_training.py``.
"""

from __future__ import annotations

import pytest
import torch

from mmapp.config import CaptionDecoderConfig, VQAConfig
from mmapp.data.collate import collate_captions, collate_vqa
from mmapp.data.grouped import collate_by_image
from mmapp.engine import Precision, lr_factor, make_scheduler
from mmapp.losses import (attention_grounding_loss, attention_grounding_loss_terms, caption_loss, caption_loss_terms,
                          count_map_loss, count_map_loss_terms, vqa_loss, vqa_loss_terms)
from mmapp.models.caption_decoder import build_caption_decoder
from mmapp.models.vqa import VQANet
from mmapp.run_config import TrainConfig
from mmapp.speed.fast_path import wants_fast_path
from mmapp.speed.fixed_shapes import pad_caption_batch, pad_vqa_batch, padding_cost, round_up, use_static_shapes
from mmapp.speed.schedule import TensorSchedule
from mmapp.speed.teacher_forcing import use_training_path

CPU = torch.device("cpu")
OFF = Precision(None, False)
pytestmark = pytest.mark.usefixtures("one_thread")


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _caption_groups(g: torch.Generator, images: int = 3, cells: int = 4, dim: int = 12) -> list[dict]:
    """Images with 1-3 captions of different lengths (``ByImage`` items) and word regions."""
    groups = []
    for _ in range(images):
        items = []
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            words = int(torch.randint(1, 7, (1,), generator=g))
            caption = torch.cat([torch.tensor([1]), torch.randint(4, 30, (words,), generator=g), torch.tensor([2])])
            regions = torch.rand(words + 1, cells, generator=g) > 0.6  # (T - 1, P)
            regions[-1] = False
            items.append({"caption": caption, "image_id": len(groups), "regions": regions})
        groups.append({"visual": torch.rand(cells, dim, generator=g), "items": items})
    return groups


def test_padded_caption_batches_give_the_unpadded_loss_and_gradients() -> None:
    g = torch.Generator().manual_seed(0)
    batch = collate_by_image(_caption_groups(g), collate_captions)
    padded = pad_caption_batch(batch, image_rows=5, row_bucket=8, length_bucket=4, max_tokens=12)
    B, T = batch["captions"].shape
    assert padded["visual"].shape[0] == 5 and padded["captions"].shape == (8, round_up(T, 4, 12))
    assert padded["regions"].shape == (8, padded["captions"].shape[1] - 1, 4) and B < 8

    def run(model, b, caption_fn, ground_fn):
        model.zero_grad()
        logits, alphas = model(b["visual"], b["captions"][:, :-1], b["image_index"])
        loss, _ = caption_fn(logits, alphas, b["captions"][:, 1:], 0, 0.7)
        loss = loss + 0.3 * ground_fn(alphas, b["regions"])[0]
        loss.backward()
        return loss.detach(), _grads(model)

    torch.manual_seed(0)
    cfg = CaptionDecoderConfig(vocab_size=30, encoder_dim=12, embed_dim=8, attention_dim=8, hidden_dim=16, dropout=0.0)
    model = build_caption_decoder(cfg)
    use_training_path(model, "shrink")  # what mmapp train runs without the fast path
    loss, grads = run(model, batch, caption_loss, attention_grounding_loss)
    use_static_shapes(model)
    fixed_loss, fixed_grads = run(model, padded, caption_loss_terms, attention_grounding_loss_terms)
    torch.testing.assert_close(fixed_loss, loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == fixed_grads.keys() and len(grads) > 5
    for name, grad in grads.items():
        torch.testing.assert_close(fixed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def _vqa_groups(g: torch.Generator, answers: int, images: int = 3, cells: int = 9, dim: int = 12) -> list[dict]:
    groups = []
    for i in range(images):
        items = []
        for q in range(int(torch.randint(1, 4, (1,), generator=g))):
            words = int(torch.randint(1, 6, (1,), generator=g))
            target = torch.zeros(answers)
            target[torch.randint(0, answers, (2,), generator=g)] = torch.tensor([1.0, 0.3])
            items.append({"question": torch.randint(4, 40, (words,), generator=g), "target": target,
                          "question_id": 10 * i + q, "image_id": i, "answers": ["x"],
                          "regions": torch.rand(2, cells, generator=g) > 0.7,  # (G, P)
                          "centres": torch.rand(cells, generator=g) > 0.8})  # (P,)
        groups.append({"visual": torch.rand(cells, dim, generator=g), "items": items})
    return groups


@pytest.mark.parametrize("count_context", [0, 4])
def test_padded_vqa_batches_give_the_unpadded_loss_and_gradients(count_context: int) -> None:
    g = torch.Generator().manual_seed(1)
    batch = collate_by_image(_vqa_groups(g, answers=7), collate_vqa)
    padded = pad_vqa_batch(batch, image_rows=4, row_bucket=8, length_bucket=4, max_tokens=8)
    assert padded["questions"].shape[0] == 8 and padded["visual"].shape[0] == 4
    assert int(padded["rows"].sum()) == batch["questions"].shape[0]

    def run(model, b, vqa_fn, ground_fn, count_fn, rows=None):
        model.zero_grad()
        logits, attention, count_map = model(b["visual"], b["questions"], b["lengths"], b["image_index"], True)
        count = count_fn(count_map, b["centres"]) if rows is None else count_fn(count_map, b["centres"], rows)
        loss = vqa_fn(logits, b["targets"])[0] + 0.5 * ground_fn(attention, b["regions"])[0] + 0.2 * count[0]
        loss.backward()
        return loss.detach(), _grads(model)

    torch.manual_seed(0)
    model = VQANet(VQAConfig(vocab_size=40, num_answers=7, encoder_dim=12, embed_dim=6, question_dim=10,
                             attention_dim=8, hidden_dim=16, dropout=0.0, count_map=3, count_context=count_context))
    loss, grads = run(model, batch, vqa_loss, attention_grounding_loss, count_map_loss)
    use_static_shapes(model)
    fixed_loss, fixed_grads = run(model, padded, vqa_loss_terms, attention_grounding_loss_terms,
                                  count_map_loss_terms, padded["rows"])
    torch.testing.assert_close(fixed_loss, loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == fixed_grads.keys() and len(grads) > 5
    for name, grad in grads.items():
        torch.testing.assert_close(fixed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.filterwarnings("ignore:Detected call of .lr_scheduler.step\(\).:UserWarning")  # no optimizer step here
@pytest.mark.parametrize("schedule,warmup,tail", [("cosine", 3, None), ("step", 0, None), ("constant", 2, 0.125),
                                                  ("cosine", 0, 0.25)])
def test_tensor_schedule_sets_lambda_lrs_rate_at_every_step(schedule, warmup, tail) -> None:
    total = 17
    float_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=3e-3)
    tensor_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=torch.tensor(3e-3), fused=True)
    lr_tensor = tensor_opt.param_groups[0]["lr"]
    floats, tensors = make_scheduler(float_opt, schedule, warmup, total, tail), TensorSchedule(
        tensor_opt, schedule, warmup, total, tail)
    seen = set()
    for step in range(total + 6):
        want = float_opt.param_groups[0]["lr"]
        assert isinstance(want, float) and tensor_opt.param_groups[0]["lr"] is lr_tensor  # written in place
        assert float(lr_tensor) == pytest.approx(want, rel=1e-6, abs=1e-12), step
        assert tensors.get_last_lr()[0] == pytest.approx(floats.get_last_lr()[0], rel=1e-6, abs=1e-12)
        seen.add(round(want, 9))
        floats.step()
        tensors.step()
    assert len(seen) > 1 or schedule == "constant"
    # either's state resumes the other at the same step
    resumed = TensorSchedule(torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=torch.tensor(3e-3)),
                             schedule, warmup, total, tail)
    for state in (floats.state_dict(), tensors.state_dict()):
        resumed.load_state_dict(state)
        assert resumed.last_epoch == floats.last_epoch
        assert float(resumed.optimizer.param_groups[0]["lr"]) == pytest.approx(
            float_opt.param_groups[0]["lr"], rel=1e-6, abs=1e-12)
    assert lr_factor(schedule, warmup, total, tail)(total + 100) == (tail if tail is not None else lr_factor(
        schedule, warmup, total)(total))


def test_tensor_schedule_refuses_a_float_rate() -> None:
    with pytest.raises(ValueError, match="tensor learning rates"):
        TensorSchedule(torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3), "cosine", 0, 5)


def test_the_switch_resolves_once_as_documented() -> None:
    torch.manual_seed(0)
    decoder = build_caption_decoder(CaptionDecoderConfig(vocab_size=30, encoder_dim=12, embed_dim=8,
                                                         attention_dim=8, hidden_dim=16))
    cuda = torch.device("cuda")  # only compared, never used
    assert not wants_fast_path(TrainConfig(), CPU, False, OFF, decoder)  # auto: off on a CPU
    assert wants_fast_path(TrainConfig(), cuda, False, OFF, decoder)  # auto: on on CUDA
    assert wants_fast_path(TrainConfig(cuda_graphs="on"), CPU, False, OFF, decoder)  # on: eager steps on a CPU
    assert not wants_fast_path(TrainConfig(cuda_graphs="off"), cuda, False, OFF, decoder)
    fp16 = Precision(torch.float16, True)
    assert not wants_fast_path(TrainConfig(), cuda, True, OFF, decoder)  # DDP: eager
    assert not wants_fast_path(TrainConfig(), cuda, False, fp16, decoder)
    assert not wants_fast_path(TrainConfig(compile=True), cuda, False, OFF, decoder)
    for cfg, precision, distributed, match in [(TrainConfig(cuda_graphs="on"), OFF, True, "one process"),
                                               (TrainConfig(cuda_graphs="on"), fp16, False, "GradScaler"),
                                               (TrainConfig(cuda_graphs="on", compile=True), OFF, False, "compile")]:
        with pytest.raises(ValueError, match=match):
            wants_fast_path(cfg, cuda, distributed, precision, decoder)
    with pytest.raises(ValueError, match="auto, on or off"):
        TrainConfig(cuda_graphs="yes")
    with pytest.raises(ValueError, match="row_bucket"):
        TrainConfig(row_bucket=0)


def test_buckets_and_what_they_cost() -> None:
    assert [round_up(n, 4, 22) for n in (1, 4, 5, 20, 21, 22)] == [4, 4, 8, 20, 22, 22]
    assert round_up(7, 1) == 7 and round_up(9, 8) == 16
    lengths = [10] * 64  # equal lengths in full batches: nothing to pad
    assert padding_cost(lengths, 32, 8, 1, 22) == {"vs_shrink": 1.0, "vs_unpadded": 1.0, "shapes": 1.0}
    cost = padding_cost([5, 9] * 32, 16, 8, 4, 22)  # every batch padded to 12 tokens; half the rows are short
    assert cost["vs_unpadded"] == pytest.approx(11 / 8) and cost["vs_shrink"] == pytest.approx(11 / 6)
