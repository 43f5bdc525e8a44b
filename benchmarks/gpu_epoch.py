"""One epoch of COCO-size caption training on one GPU, on synthetic data of COCO's shapes.

    python -m benchmarks.gpu_epoch                      # the full epoch on CUDA (bf16 autocast)
    python -m benchmarks.gpu_epoch --steps 300          # time 300 steps, extrapolate the epoch
    python -m benchmarks.gpu_epoch --tiny               # CPU smoke test in seconds (figures mean nothing)

Data: 113,287 images (the Karpathy train split) x 5 captions = 566,435 captions; cached 7x7x1280 grids
(float16, held on the GPU: 14.2 GB) and COCO-like caption lengths (6 + Poisson(4) words, at most 50),
all random. Batches hold 256 captions in shuffled image order (an image's 5 captions together, each
grid used once, as mmapp's ``ByImage`` batches them) and go through mmapp's training engine
(``train_one_epoch``: bf16 autocast, loss, backward, gradient clipping, fused Adam) on the issue's
decoder (attention/embedding/LSTM 512, vocabulary 10,000).
``--cuda-graphs`` trains with each step captured in a CUDA graph and replayed (``mmapp.speed.graphed``):
batches are padded to fixed shapes (caption lengths rounded up to a multiple of ``--length-bucket``,
image rows to ceil(batch / captions per image) + 1), the decoder runs every row through every word.
``--check-steps N`` first trains N steps twice on the same batches, replayed and eager, and prints how
far the weights drifted apart (dropout off), so a capture that computes something else is seen.
``--reference-steps N`` also times N steps of the tutorial's decoder (fp32, one grid per caption) for
scale. Results go to ``benchmarks/results/gpu_epoch.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from benchmarks.common import END, PAD, START, median

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_epoch", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=113_287, help="images (default: COCO Karpathy train, %(default)s)")
    p.add_argument("--captions-per-image", type=int, default=5, help="captions per image (default %(default)s)")
    p.add_argument("--batch", type=int, default=256, help="captions per step (default %(default)s)")
    p.add_argument("--steps", type=int, default=0,
                   help="time only this many steps and extrapolate (default: the whole epoch)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (default %(default)s)")
    p.add_argument("--grid", type=int, default=7, help="grid side (default %(default)s: 7x7)")
    p.add_argument("--dim", type=int, default=1280, help="feature width D (default %(default)s)")
    p.add_argument("--vocab", type=int, default=10_000, help="vocabulary (default %(default)s)")
    p.add_argument("--width", type=int, default=512, help="attention/embedding/LSTM width (default %(default)s)")
    p.add_argument("--amp", choices=("bf16", "fp16", "off"), default="bf16", help="autocast (default %(default)s)")
    p.add_argument("--features-on", choices=("device", "cpu"), default="device",
                   help="where the feature cache lives (cpu: pinned memory, copied per batch)")
    p.add_argument("--reference-steps", type=int, default=0,
                   help="also time the tutorial's decoder (fp32) for this many steps")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decoder's per-word update (compilation happens in the warm-up steps)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="capture each step (forward, loss, backward, clipping, fused Adam) in a CUDA graph")
    p.add_argument("--length-bucket", type=int, default=4,
                   help="with --cuda-graphs: pad caption lengths up to a multiple of this (default %(default)s)")
    p.add_argument("--check-steps", type=int, default=0,
                   help="with --cuda-graphs: first compare N replayed steps with the same steps run eagerly")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny sizes, fp32 (figures mean nothing)")
    p.add_argument("--out", type=Path, default=RESULTS / "gpu_epoch.json", help="JSON results (default %(default)s)")
    args = p.parse_args(argv)
    if args.tiny:
        args.images, args.batch, args.dim, args.vocab, args.width = 60, 32, 64, 300, 32
        args.warmup, args.device, args.amp = 2, "cpu", "off"
        args.reference_steps = min(args.reference_steps or 3, 3)
    return args


def synthetic_captions(n: int, vocab: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(captions (n, 52) ``<start> w.. <end> <pad>..``, lengths (n,)): 6 + Poisson(4) words, at most 50."""
    words = (6 + torch.poisson(torch.full((n,), 4.0), generator=g).long()).clamp(max=50)
    lengths = words + 2
    L = int(lengths.max())
    captions = torch.randint(4, vocab, (n, L), generator=g)
    positions = torch.arange(L)
    captions[positions >= lengths.unsqueeze(1)] = PAD
    captions[positions == (lengths - 1).unsqueeze(1)] = END
    captions[:, 0] = START
    return captions, lengths


def synthetic_features(images: int, cells: int, dim: int, device: torch.device, on: str) -> torch.Tensor:
    """(images, P, D) float16 in [0, 1), made in chunks where they will live."""
    where = device if on == "device" else torch.device("cpu")
    features = torch.empty(images, cells, dim, dtype=torch.float16, device=where)
    g = torch.Generator(device=where).manual_seed(0)
    for start in range(0, images, 4096):
        chunk = features[start : start + 4096]
        chunk.copy_(torch.rand(chunk.shape, generator=g, device=where, dtype=torch.float32))
    return features.pin_memory() if on == "cpu" and device.type == "cuda" else features


def batches(features, captions, lengths, per_image: int, batch: int, device: torch.device, g: torch.Generator,
            length_bucket: int = 0):
    """Yield batches of ``batch`` captions in shuffled image order (an image's captions together, as
    mmapp's ``ByImage`` groups them): each image's grid once, ``image_index`` naming each caption's row.

    With ``length_bucket`` the shapes are fixed for CUDA graphs: captions padded to a length that is a
    multiple of it, and always ceil(batch / per_image) + 1 image rows (the last image repeated; no
    caption points at the copies)."""
    from mmapp.speed.fixed_shapes import repeat_last, round_up

    order = torch.randperm(features.shape[0], generator=g)
    caption_rows = (order.unsqueeze(1) * per_image + torch.arange(per_image)).flatten()  # (N,)
    image_rows = -(-batch // per_image) + 1
    for start in range(0, len(caption_rows), batch):
        rows = caption_rows[start : start + batch]  # (B,)
        images, image_index = torch.unique_consecutive(rows // per_image, return_inverse=True)  # (I,), (B,)
        L = int(lengths[rows].max())
        if length_bucket:  # mmapp train's fast path pads the same way (mmapp.speed.fixed_shapes)
            L = round_up(L, length_bucket, captions.shape[1])
            images = repeat_last(images, image_rows)  # (image_rows,)
        yield {"visual": features[images.to(features.device)].to(device, non_blocking=True).float(),  # (I, P, D)
               "captions": captions[rows, :L].to(device, non_blocking=True),
               "image_index": image_index.to(device, non_blocking=True)}


def main(argv: list[str] | None = None) -> int:
    from mmapp.config import CaptionDecoderConfig
    from mmapp.engine import Precision, train_one_epoch
    from mmapp.speed.graphed import GraphedTrainStep, train_graphed_epoch
    from mmapp.losses import caption_loss
    from mmapp.models.caption_decoder import build_caption_decoder
    from mmapp.speed.teacher_forcing import use_training_path

    args = parse_args(argv)
    if args.tiny:
        torch.set_num_threads(1)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run on a GPU machine, or pass --tiny for a CPU smoke test")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    n_captions = args.images * args.captions_per_image
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    features = synthetic_features(args.images, args.grid * args.grid, args.dim, device, args.features_on)
    captions, lengths = synthetic_captions(n_captions, args.vocab, g)
    sync()
    setup_s = time.perf_counter() - t0

    precision = Precision.resolve(args.amp if device.type == "cuda" else "off", device)
    if args.cuda_graphs and args.compile:
        raise SystemExit("--cuda-graphs and --compile are two training paths: pick one")
    if args.cuda_graphs and precision.use_scaler:
        raise SystemExit("--cuda-graphs trains in bf16 or fp32 (--amp bf16/off): fp16's GradScaler is not captured")
    bucket = args.length_bucket if args.cuda_graphs else 0
    check = graph_check(args, features, captions, lengths, device, precision, g) if args.check_steps else {}

    def build():
        torch.manual_seed(0)
        cfg = CaptionDecoderConfig(vocab_size=args.vocab, encoder_dim=args.dim, embed_dim=args.width,
                                   attention_dim=args.width, hidden_dim=args.width, dropout=0.5)
        model = build_caption_decoder(cfg).to(device)
        use_training_path(model, "static" if args.cuda_graphs else "compile" if args.compile else "shrink")
        fused = {"fused": True} if device.type == "cuda" or args.cuda_graphs else {}
        if args.cuda_graphs:
            fused["capturable"] = device.type == "cuda"
        return model, torch.optim.Adam(model.parameters(), lr=4e-4, **fused)

    model, optimizer = build()
    scaler = torch.amp.GradScaler("cuda") if precision.use_scaler else None
    graphed = (GraphedTrainStep(model, caption_loss_terms_fn, optimizer, precision, 5.0, device)
               if args.cuda_graphs else None)

    def loss_fn(m, b):  # what mmapp.tasks.caption.CaptionTask.loss does
        logits, alphas = m(b["visual"], b["captions"][:, :-1], b["image_index"])
        loss, stats = caption_loss(logits, alphas, b["captions"][:, 1:], PAD, 1.0)
        return loss, stats, b["captions"].shape[0]

    def epoch(stream, **kw):
        if graphed is not None:
            return train_graphed_epoch(model, stream, graphed, None, device, **kw)
        return train_one_epoch(model, stream, loss_fn, optimizer, None, device, precision, 5.0, scaler, **kw)

    steps_per_epoch = math.ceil(n_captions / args.batch)
    timed_steps = min(args.steps, steps_per_epoch - args.warmup) if args.steps else steps_per_epoch - args.warmup
    stream = batches(features, captions, lengths, args.captions_per_image, args.batch, device, g, bucket)
    warm = [next(stream) for _ in range(args.warmup)]
    last = n_captions % args.batch
    if args.compile and last:  # the epoch's short last batch is compiled for in the warm-up too
        warm.append({"visual": warm[0]["visual"], "captions": warm[0]["captions"][:last],
                     "image_index": warm[0]["image_index"][:last]})
    t0 = time.perf_counter()
    epoch(warm)
    sync()
    warmup_s = time.perf_counter() - t0
    stamps: list[float] = []
    start = time.perf_counter()
    stats = epoch((next(stream) for _ in range(timed_steps)), on_step=lambda s, st: stamps.append(time.perf_counter()))
    sync()
    seconds = time.perf_counter() - start
    step_ms = seconds / max(1, timed_steps) * 1e3
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    epoch_s = step_ms * steps_per_epoch / 1e3
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "amp": args.amp if precision.dtype else "off", "tiny": args.tiny,
        "images": args.images, "captions": n_captions, "batch": args.batch, "grid": f"{args.grid}x{args.grid}",
        "steps_per_epoch": steps_per_epoch, "timed_steps": timed_steps, "warmup_steps": args.warmup,
        "ms_per_step": round(step_ms, 2),
        "median_ms_per_step": round(median(gaps) * 1e3, 2) if gaps else None,
        "captions_per_s": round(stats["items_per_s"], 1),
        "epoch_seconds": round(epoch_s, 1), "epoch_measured": timed_steps + args.warmup >= steps_per_epoch,
        "target_epoch_seconds": 60.0, "meets_target": None if args.tiny else epoch_s <= 60.0,
        "setup_seconds": round(setup_s, 1), "compiled": args.compile, "warmup_seconds": round(warmup_s, 1),
        "cuda_graphs": args.cuda_graphs, "length_bucket": bucket or None,
        "graphs": graphed.graphs if graphed else None, "eager_steps": graphed.eager_steps if graphed else None,
        "loss": round(stats["loss"], 4),
    }
    if device.type == "cuda":
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    result.update(check)
    if args.reference_steps:
        result.update(reference(args, features, captions, lengths, device, sync))
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


def caption_loss_terms_fn(m, b):
    """What ``loss_fn`` computes, with its terms left on the device (for ``GraphedTrainStep``)."""
    from mmapp.losses import caption_loss_terms

    logits, alphas = m(b["visual"], b["captions"][:, :-1], b["image_index"])
    loss, terms = caption_loss_terms(logits, alphas, b["captions"][:, 1:], PAD, 1.0)
    return loss, terms, b["captions"].shape[0]


def graph_check(args, features, captions, lengths, device, precision, g) -> dict:
    """Train ``--check-steps`` steps twice from the same weights on the same batches (dropout off):
    replayed from CUDA graphs, and eagerly; returns the largest difference of losses and weights."""
    from mmapp.config import CaptionDecoderConfig
    from mmapp.speed.graphed import GraphedTrainStep
    from mmapp.models.caption_decoder import build_caption_decoder
    from mmapp.speed.teacher_forcing import use_training_path

    stream = batches(features, captions, lengths, args.captions_per_image, args.batch, device,
                     torch.Generator().manual_seed(7), args.length_bucket)
    fixed = [next(stream) for _ in range(2)]
    plan = [fixed[i % 2] for i in range(args.check_steps)]  # two shapes, each captured after its warm-up
    runs = []
    for capture in (device.type == "cuda", False):
        torch.manual_seed(0)
        cfg = CaptionDecoderConfig(vocab_size=args.vocab, encoder_dim=args.dim, embed_dim=args.width,
                                   attention_dim=args.width, hidden_dim=args.width, dropout=0.0)
        model = build_caption_decoder(cfg).to(device)
        use_training_path(model, "static")
        optimizer = torch.optim.Adam(model.parameters(), lr=4e-4, fused=True, capturable=device.type == "cuda")
        step = GraphedTrainStep(model, caption_loss_terms_fn, optimizer, precision, 5.0, device, warmup=1,
                                capture=capture)
        losses = torch.stack([step(b)[0].clone() for b in plan])
        runs.append((losses, [p.detach().clone() for p in model.parameters()], step.replays))
    (l_graph, p_graph, replays), (l_eager, p_eager, _) = runs
    weight_diff = max(float((a - b).abs().max()) for a, b in zip(p_graph, p_eager))
    result = {"check_steps": args.check_steps, "check_replays": replays,
              "check_max_loss_diff": float((l_graph - l_eager).abs().max()),
              "check_max_weight_diff": weight_diff,
              "check_loss_first_last": [round(float(l_graph[0]), 4), round(float(l_graph[-1]), 4)]}
    print(json.dumps(result), flush=True)
    return result


def reference(args, features, captions, lengths, device, sync) -> dict:
    """ms per step of the tutorial's decoder (fp32, one grid per caption, as its loader gives them)."""
    from benchmarks.reference import DecoderWithAttention, tutorial_train_step

    torch.manual_seed(0)
    ref = DecoderWithAttention(args.width, args.width, args.width, args.vocab, encoder_dim=args.dim).to(device)
    optimizer = torch.optim.Adam(ref.parameters(), lr=4e-4)
    g = torch.Generator().manual_seed(1)
    times = []
    for step in range(args.reference_steps + 2):
        rows = torch.randint(0, captions.shape[0], (args.batch,), generator=g)
        visual = features[(rows // args.captions_per_image).to(features.device)].to(device).float()
        caps, caplens = captions[rows].to(device), lengths[rows].unsqueeze(1).to(device)
        sync()
        start = time.perf_counter()
        tutorial_train_step(ref, optimizer, visual, caps, caplens)
        sync()
        if step >= 2:
            times.append(time.perf_counter() - start)
    ms = median(times) * 1e3
    epoch_s = ms * math.ceil(len(captions) / args.batch) / 1e3
    return {"reference_ms_per_step": round(ms, 2), "reference_epoch_seconds": round(epoch_s, 1)}


if __name__ == "__main__":
    raise SystemExit(main())
