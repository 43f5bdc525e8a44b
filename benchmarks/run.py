"""Run the CPU benchmarks: ``python -m benchmarks.run [--quick] [--only GROUPS] [--out JSON] [--md MD]``.

Prints one table and writes it as JSON (``benchmarks/results/latest.json``) and as a Markdown table
ready to paste into docs/benchmarks.md (``benchmarks/results/latest.md``). Every figure is a median
over repeats with its ratio to its target or to a baseline measured in the same run (> 1 is better).
``--quick`` is a smoke run with tiny sizes: its figures mean nothing. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import Figure, Sizes, peak_rss_mb

RESULTS = Path(__file__).resolve().parent / "results"
GROUPS = ("train", "beam", "encoder", "e2e", "features", "vqa", "app")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and few repeats: a smoke run (its figures mean nothing)")
    p.add_argument("--only", default=",".join(GROUPS),
                   help=f"comma-separated groups to run (default all: {','.join(GROUPS)})")
    p.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="JSON results (default %(default)s)")
    p.add_argument("--md", type=Path, default=None, help="Markdown table (default: --out with .md)")
    p.add_argument("--threads", type=int, default=None,
                   help=f"torch intra-op threads (default: the machine's cores, {os.cpu_count()}; 1 with --quick)")
    args = p.parse_args(argv)
    args.only = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = set(args.only) - set(GROUPS)
    if unknown:
        p.error(f"unknown group(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
    args.md = args.md or args.out.with_suffix(".md")
    args.threads = args.threads or (1 if args.quick else os.cpu_count() or 1)
    return args


def run_groups(groups: list[str], sizes: Sizes, work: Path, log) -> tuple[list[Figure], dict[str, float]]:
    """Run the asked-for groups in a fixed order; returns the figures and each group's seconds."""
    from benchmarks import captioning, encoding, serving, vqa

    figures: list[Figure] = []
    seconds: dict[str, float] = {}

    def group(name: str, fn) -> None:
        if name not in groups:
            return
        log(f"[{name}] ...")
        start = time.perf_counter()
        new = fn()
        seconds[name] = round(time.perf_counter() - start, 1)
        figures.extend(new)
        log(f"[{name}] {seconds[name]:.0f} s")

    def encoder_figures() -> list[Figure]:
        return encoding.encoder_by_batch(sizes)

    group("train", lambda: captioning.training(sizes, 7) + captioning.training(sizes, 14)
          + captioning.shipped_captioner_training(sizes))
    group("beam", lambda: captioning.beam(sizes, 7, 3, batched=True) + captioning.beam(sizes, 7, 5, batched=False)
          + captioning.beam(sizes, 14, 3, batched=False))
    group("encoder", encoder_figures)
    raw = next((f.value for f in figures if f.name == f"mmapp encoder, batch {max(sizes.encoder_batches)}"), None)
    group("features", lambda: encoding.feature_extraction(sizes, raw))

    def e2e() -> list[Figure]:
        out = encoding.end_to_end(sizes, encoding.tutorial_size_captioner(work, sizes),
                                  "issue's decoder sizes, 7x7 grid", target_ms=35.0)
        cap, _, kind = serving.default_or_stand_in(work / "checkpoints")
        return out + encoding.end_to_end(sizes, cap, f"app's default captioner ({kind}), 14x14 grid", target_ms=25.0)

    group("e2e", e2e)
    group("vqa", lambda: vqa.run(sizes))
    group("app", lambda: serving.run(sizes, work))
    return figures, seconds


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or value != value:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def table(figures: list[Figure]) -> str:
    """A Markdown table: group, figure, value, compared with, ratio (> 1 better), target met."""
    lines = ["| group | figure | value | compared with | ratio | target |", "|---|---|---|---|---|---|"]
    for f in figures:
        ratio = f"{fmt(f.ratio)}x" if f.ratio is not None else "-"
        target = "-" if f.need is None else (f"{'met' if f.meets else 'NOT met'} (>= {f.need:g}x)")
        note = f" ({f.note})" if f.note else ""
        value = f"{fmt(f.value)} {f.unit}"
        lines.append(f"| {f.group} | {f.name}{note} | {value} | {f.compare or '-'} | {ratio} | {target} |")
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def environment(args: argparse.Namespace) -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "cpu": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "quick": args.quick, "groups": args.only, "load_average_at_start": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = Sizes.quick() if args.quick else Sizes.full()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    env = environment(args)
    busy = env["load_average_at_start"][0]
    if busy > 0.5 * (os.cpu_count() or 1):
        log(f"warning: load average {busy:.1f} on {os.cpu_count()} cores: other processes will distort the "
            "figures (and threads spin-wait on a busy machine: --threads 1 runs faster there)")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mmapp-bench-") as tmp:
        figures, seconds = run_groups(args.only, sizes, Path(tmp), log)
    total = time.perf_counter() - start
    env.update(seconds=round(total, 1), group_seconds=seconds, bench_process_peak_rss_mib=round(peak_rss_mb()),
               load_average_at_end=os.getloadavg())
    md = table(figures)
    print(md)
    met = [f for f in figures if f.meets is not None]
    print(f"\n{sum(f.meets for f in met)}/{len(met)} targets met; {total:.0f} s"
          f"{' (--quick: sizes are tiny, figures mean nothing)' if args.quick else ''}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": env, "figures": [f.to_dict() for f in figures]}, indent=1))
    header = (f"<!-- python -m benchmarks.run{' --quick' if args.quick else ''}: {env['cpu']} x {env['cpu_count']}, "
              f"torch {env['torch']}, {env['threads']} threads, {total:.0f} s, load average at start "
              f"{env['load_average_at_start'][0]:.2f}, at end {env['load_average_at_end'][0]:.2f} -->\n")
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(header + md + "\n")
    log(f"wrote {args.out} and {args.md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
