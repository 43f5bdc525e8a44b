"""Caption decoder benchmarks: training throughput and beam search, mmapp against the tutorial's decoder.

Both decoders have the issue's dimensions (attention/embedding/LSTM 512, vocabulary 10,000, encoder
dimension 1280) and random weights; the training batch is 64 COCO-like captions (mean 12 tokens) on
cached grids. mmapp trains through its real engine (``train_one_epoch``: loss, backward, gradient-norm
clipping, Adam); the tutorial through ``benchmarks.reference.tutorial_train_step``.

Beam searches run a fixed number of decoder steps: random weights almost never emit ``<end>``, and the
shared output bias of ``<end>`` is set very low in both models so that none ever does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from benchmarks.common import END, PAD, START, Figure, Sizes, against, caption_batch, median, timed
from benchmarks.reference import DecoderWithAttention, caption_image_beam_search, to_mmapp, tutorial_train_step
from mmapp.engine import Precision, train_one_epoch
from mmapp.speed.teacher_forcing import use_training_path
from mmapp.losses import caption_loss
from mmapp.models.decoding import beam_search

GROUP_TRAIN, GROUP_BEAM = "caption training", "beam search"
# The issue's figures for the tutorial on this machine (2 threads), to check the machine against them.
ISSUE_STEP_S = {7: 1.0, 14: 2.1}
ISSUE_BEAM_MS = {(7, 3): 49.0, (7, 5): 76.0, (14, 3): 100.0}
TUTORIAL_MAX_CAPTION = 52  # the tutorial pads every caption to 50 words + <start> + <end>


def reference_decoder(sizes: Sizes, seed: int = 0) -> DecoderWithAttention:
    torch.manual_seed(seed)
    ref = DecoderWithAttention(attention_dim=sizes.attention, embed_dim=sizes.embed, decoder_dim=sizes.hidden,
                               vocab_size=sizes.vocab, encoder_dim=sizes.encoder_dim, dropout=0.5)
    with torch.no_grad():
        ref.fc.bias[END] = -1e4  # see the module docstring: every search runs all its steps
    return ref


def grid(n: int, side: int, dim: int, seed: int) -> Tensor:
    """(n, side*side, dim) non-negative features, like a CNN's last activations."""
    return torch.rand(n, side * side, dim, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------
# Training


def _tutorial_step_times(sizes: Sizes, features: Tensor, captions: Tensor, lengths: Tensor) -> list[float]:
    ref = reference_decoder(sizes).train()
    optimizer = torch.optim.Adam(ref.parameters(), lr=4e-4)
    padded = torch.zeros(captions.shape[0], max(TUTORIAL_MAX_CAPTION, captions.shape[1]), dtype=torch.long)
    padded[:, : captions.shape[1]] = captions
    caplens = lengths.unsqueeze(1)  # (B, 1) as the tutorial's dataset gives them
    return timed(lambda: tutorial_train_step(ref, optimizer, features, padded, caplens), sizes.train_repeats)


def _mmapp_step_times(sizes: Sizes, features: Tensor, captions: Tensor, image_index: Tensor | None,
                      decoder: torch.nn.Module | None = None, path: str = "shrink") -> list[float]:
    """Seconds per optimizer step of mmapp's engine, from its ``on_step`` callback (first step untimed),
    training ``decoder`` (default: the tutorial's, converted) with teacher-forcing ``path``."""
    import time

    decoder = (decoder or to_mmapp(reference_decoder(sizes))).train()
    use_training_path(decoder, path)  # shrink: what mmapp train uses
    optimizer = torch.optim.Adam(decoder.parameters(), lr=4e-4)
    batch = {"visual": features, "captions": captions, "image_index": image_index}

    def loss_fn(model, b):  # what mmapp.tasks.caption.CaptionTask.loss does
        logits, alphas = model(b["visual"], b["captions"][:, :-1], b["image_index"])  # (B, T, V), (B, T, P)
        loss, stats = caption_loss(logits, alphas, b["captions"][:, 1:], PAD, 1.0)
        return loss, stats, b["captions"].shape[0]

    stamps: list[float] = []
    start = time.perf_counter()
    train_one_epoch(decoder, [batch] * (sizes.train_repeats + 1), loss_fn, optimizer, None, torch.device("cpu"),
                    Precision(None, False), grad_clip=5.0, on_step=lambda *_: stamps.append(time.perf_counter()))
    ends = [start] + stamps
    return [b - a for a, b in zip(ends, ends[1:])][1:]


def shipped_captioner_training(sizes: Sizes) -> list[Figure]:
    """Captions/s of one training step of the shipped captioner's own decoder (its stored config:
    ImageNet evidence, 14x14 joined grid + pixels; ``checkpoints/captioner.safetensors``; no rows
    without it) as ``make defaults`` trains it: 32 images x 5 captions (mean 12 tokens), ``shrink``
    against the plain loop (every caption through every step, the memory copied per caption)."""
    from mmapp.checkpoint import load_head
    from mmapp.inference import default_checkpoint

    path = default_checkpoint("captioner")
    if not path.is_file():
        return []
    head, _, _ = load_head(path, "captioner")
    cfg = head.cfg
    images, per_image = (32, 5) if sizes.batch >= 64 else (4, 5)
    g = torch.Generator().manual_seed(3)
    captions, _ = caption_batch(images * per_image, cfg.vocab_size, g)
    features = grid(images, 14, cfg.encoder_dim, 3)
    image_index = torch.arange(images * per_image) // per_image
    rates = {}
    for path_name in ("plain", "shrink"):
        rates[path_name] = _mmapp_step_times(sizes, features, captions, image_index, decoder=head, path=path_name)
    plain, shrink = (images * per_image / median(rates[k]) for k in ("plain", "shrink"))
    what = f"{images} images x {per_image} captions, vocabulary {cfg.vocab_size}, grid 14x14x{cfg.encoder_dim}"
    return [
        Figure(GROUP_TRAIN, f"shipped captioner's decoder, plain loop ({what})", plain, "captions/s", True,
               note=f"{median(rates['plain']) * 1e3:.0f} ms/step", samples=rates["plain"]),
        Figure(GROUP_TRAIN, f"shipped captioner's decoder, shrinking loop (what mmapp train runs; {what})", shrink,
               "captions/s", True, "plain loop (same run)", against(shrink, plain, True), None,
               f"{median(rates['shrink']) * 1e3:.0f} ms/step", rates["shrink"]),
    ]


def training(sizes: Sizes, side: int) -> list[Figure]:
    """Captions/s of one training step on a ``side`` x ``side`` grid: tutorial vs mmapp (same batch)."""
    g = torch.Generator().manual_seed(side)
    captions, lengths = caption_batch(sizes.batch, sizes.vocab, g)
    features = grid(sizes.batch, side, sizes.encoder_dim, side)
    ref_times = _tutorial_step_times(sizes, features, captions, lengths)
    our_times = _mmapp_step_times(sizes, features, captions, None)
    # mmapp as it trains on COCO: ~5 captions per image, per-image work done once (image_index)
    per_image = 5
    images = (sizes.batch + per_image - 1) // per_image
    image_index = torch.arange(sizes.batch) // per_image
    grouped_times = _mmapp_step_times(sizes, features[:images], captions, image_index)

    ref_rate = sizes.batch / median(ref_times)
    our_rate = sizes.batch / median(our_times)
    grouped_rate = sizes.batch / median(grouped_times)
    tag = f"{side}x{side}"
    return [
        Figure(GROUP_TRAIN, f"tutorial decoder, {tag}", ref_rate, "captions/s", True,
               note=f"{median(ref_times) * 1e3:.0f} ms/step of {sizes.batch}; issue: ~{ISSUE_STEP_S.get(side, 0)} s",
               samples=ref_times),
        Figure(GROUP_TRAIN, f"mmapp decoder, {tag}", our_rate, "captions/s", True, "tutorial (same run)",
               against(our_rate, ref_rate, True), 2.0, f"{median(our_times) * 1e3:.0f} ms/step", our_times),
        Figure(GROUP_TRAIN, f"mmapp decoder, {tag}, 5 captions per image", grouped_rate, "captions/s", True,
               "tutorial (same run)", against(grouped_rate, ref_rate, True), None,
               f"{median(grouped_times) * 1e3:.0f} ms/step; how mmapp batches COCO (information)", grouped_times),
    ]


# ----------------------------------------------------------------------------------------------
# Beam search


def _per_image_times(search, features: Tensor, repeats: int) -> list[float]:
    """Seconds per image, one search per image, ``repeats`` passes over the images (first image warms up)."""
    import time

    search(features[:1])
    times = []
    for _ in range(repeats):
        for i in range(features.shape[0]):
            start = time.perf_counter()
            search(features[i : i + 1])
            times.append(time.perf_counter() - start)
    return times


def beam(sizes: Sizes, side: int, beam_size: int, batched: bool) -> list[Figure]:
    """Beam search latency per image, tutorial (one image at a time) vs mmapp (alone, and batched)."""
    ref = reference_decoder(sizes).eval()
    ours = to_mmapp(ref).eval()
    n = sizes.beam_images if batched else sizes.single_images
    features = grid(max(n, sizes.single_images), side, sizes.encoder_dim, 100 + side)
    steps = sizes.steps

    def tutorial(f: Tensor) -> None:
        caption_image_beam_search(ref, f, START, END, beam_size, max_steps=steps)

    @torch.inference_mode()
    def mmapp(f: Tensor) -> None:  # max_len words + the forced <end>: ``steps`` decoder steps
        beam_search(ours, f, beam_size, steps - 1, START, END, PAD)

    ref_times = _per_image_times(tutorial, features[: sizes.single_images], sizes.repeats)
    our_times = _per_image_times(mmapp, features[: sizes.single_images], sizes.repeats)
    ref_ms, our_ms = median(ref_times) * 1e3, median(our_times) * 1e3
    tag = f"beam {beam_size}, {side}x{side}, {steps} steps"
    figures = [
        Figure(GROUP_BEAM, f"tutorial, one image at a time ({tag})", ref_ms, "ms/image", False,
               note=f"issue: ~{ISSUE_BEAM_MS.get((side, beam_size), 0):.0f} ms", samples=ref_times),
        Figure(GROUP_BEAM, f"mmapp, one image at a time ({tag})", our_ms, "ms/image", False, "tutorial (same run)",
               against(our_ms, ref_ms, False), 1.0, samples=our_times),
    ]
    if batched:
        call_times = timed(lambda: mmapp(features[:n]), sizes.repeats + 2)
        per_image = median(call_times) / n * 1e3
        figures.append(Figure(GROUP_BEAM, f"mmapp, {n} images batched ({tag})", per_image, "ms/image", False,
                              "tutorial one at a time (same run)", against(per_image, ref_ms, False), 10.0,
                              f"{median(call_times) * 1e3:.0f} ms per call of {n}; tutorial {ref_ms * n / 1e3:.2f} s "
                              f"for {n}", call_times))
    return figures
