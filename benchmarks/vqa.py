"""VQA benchmarks: training throughput and inference latency, mmapp's ``VQANet`` against the
pytorch-vqa baseline (``benchmarks.reference_vqa``) with the same dimensions (14x14x2048 grids,
300-d embeddings, 1024-unit question LSTM, 2 glimpses of 512-d attention, concatenation, 1024-unit
classifier, 3000 answers, batch 128). Question lengths are VQA-like (4 + Poisson(2.2) words, mean 6.2)."""

from __future__ import annotations

import time

import torch
from torch import Tensor

from benchmarks.common import Figure, Sizes, against, median, timed
from benchmarks.reference_vqa import Net, train_step
from mmapp.config import VQAConfig
from mmapp.engine import Precision, train_one_epoch
from mmapp.losses import vqa_loss
from mmapp.models.vqa import VQANet

GROUP = "VQA"


def question_batch(n: int, vocab: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """(questions (n, L) padded with 0 and sorted longest first, as the baseline's loader sorts them, lengths (n,))."""
    lengths = (4 + torch.poisson(torch.full((n,), 2.2), generator=g).long()).sort(descending=True).values
    questions = torch.randint(1, vocab, (n, int(lengths.max())), generator=g)
    questions[torch.arange(questions.shape[1]) >= lengths.unsqueeze(1)] = 0
    return questions, lengths


def mmapp_net(sizes: Sizes) -> VQANet:
    torch.manual_seed(0)
    return VQANet(VQAConfig(vocab_size=sizes.vqa_vocab, num_answers=sizes.vqa_answers, encoder_dim=sizes.vqa_dim,
                            embed_dim=300, question_dim=1024, attention_dim=512, glimpses=2, fusion="concat",
                            hidden_dim=1024, dropout=0.5))


def _mmapp_step_times(sizes: Sizes, net: VQANet, batch: dict) -> list[float]:
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

    def loss_fn(model, b):  # what mmapp.tasks.vqa.VQATask.loss does
        logits, _ = model(b["visual"], b["questions"], b["lengths"], b["image_index"])
        loss, stats = vqa_loss(logits, b["targets"])
        return loss, stats, logits.shape[0]

    stamps: list[float] = []
    start = time.perf_counter()
    train_one_epoch(net.train(), [batch] * (sizes.train_repeats + 1), loss_fn, optimizer, None, torch.device("cpu"),
                    Precision(None, False), grad_clip=5.0, on_step=lambda s, st: stamps.append(time.perf_counter()))
    ends = [start] + stamps
    return [b - a for a, b in zip(ends, ends[1:])][1:]


def run(sizes: Sizes) -> list[Figure]:
    g = torch.Generator().manual_seed(7)
    B, side, D, N = sizes.vqa_batch, sizes.vqa_grid, sizes.vqa_dim, sizes.vqa_answers
    grids = torch.rand(B, side * side, D, generator=g)  # (B, P, D)
    questions, lengths = question_batch(B, sizes.vqa_vocab, g)
    counts = torch.zeros(B, N)
    counts[torch.arange(B), torch.randint(0, N, (B,), generator=g)] = 10.0  # ten annotators, one answer
    targets = counts / 10.0

    torch.manual_seed(0)
    ref = Net(sizes.vqa_vocab, D, N).train()
    ref_opt = torch.optim.Adam(ref.parameters())
    v = grids.transpose(1, 2).reshape(B, D, side, side).contiguous()  # (B, D, H, W), as the baseline reads them
    ref_times = timed(lambda: train_step(ref, ref_opt, v, questions, counts, lengths), sizes.train_repeats)
    ours = mmapp_net(sizes)
    our_times = _mmapp_step_times(sizes, ours, {"visual": grids, "questions": questions, "lengths": lengths,
                                                "targets": targets, "image_index": None})
    images = (B + 4) // 5  # VQA v2 has ~5.4 questions per image: mmapp groups them by image
    grouped_times = _mmapp_step_times(sizes, mmapp_net(sizes), {
        "visual": grids[:images], "questions": questions, "lengths": lengths, "targets": targets,
        "image_index": torch.arange(B) // 5})
    ref_rate, our_rate, grouped_rate = (B / median(t) for t in (ref_times, our_times, grouped_times))
    figures = [
        Figure(GROUP, "training, pytorch-vqa baseline", ref_rate, "questions/s", True,
               note=f"{median(ref_times) * 1e3:.0f} ms/step of {B}; issue: ~2.1 s", samples=ref_times),
        Figure(GROUP, "training, mmapp", our_rate, "questions/s", True, "baseline (same run)",
               against(our_rate, ref_rate, True), None, f"{median(our_times) * 1e3:.0f} ms/step", our_times),
        Figure(GROUP, "training, mmapp, 5 questions per image", grouped_rate, "questions/s", True,
               "baseline (same run)", against(grouped_rate, ref_rate, True), None,
               f"{median(grouped_times) * 1e3:.0f} ms/step; how mmapp batches VQA v2", grouped_times),
    ]

    ref.eval()
    ours.eval()
    for n in (1, min(64, B)):
        with torch.no_grad():
            ref_t = timed(lambda: ref(v[:n], questions[:n], lengths[:n]), sizes.repeats * (8 if n == 1 else 1) + 1)
        with torch.inference_mode():
            our_t = timed(lambda: ours(grids[:n], questions[:n], lengths[:n]), sizes.repeats * (8 if n == 1 else 1) + 1)
        ref_ms, our_ms = median(ref_t) / n * 1e3, median(our_t) / n * 1e3
        what = "one question alone" if n == 1 else f"batches of {n}"
        figures += [
            Figure(GROUP, f"inference, baseline, {what}", ref_ms, "ms/question", False,
                   note=f"issue: ~{9.0 if n == 1 else 3.7} ms", samples=ref_t),
            Figure(GROUP, f"inference, mmapp, {what}", our_ms, "ms/question", False, "baseline (same run)",
                   against(our_ms, ref_ms, False), None, samples=our_t),
        ]
    return figures
