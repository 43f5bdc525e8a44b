"""``mmapp train caption|vqa``: wire a run config, a task and the trainer together."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mmapp.config import load_config
from mmapp.run_config import RunConfig

EPILOG = """\
Configuration: defaults (mmapp/run_config.py), then --config FILE (YAML), then key=value overrides,
e.g.  train.epochs=5 train.lr=3e-4 decoder.cell=gru data.features=runs/features/train.
The resolved config is written to <out>/config.yaml; checkpoints best.safetensors and
last.safetensors, metrics.jsonl and curves.png go to the same folder.
Multi-GPU / multi-node: torchrun --nproc_per_node=N -m mmapp train caption --config FILE
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train a captioner or a VQA model",
                            description="Train the captioner (caption) or the VQA model (vqa) on "
                                        "COCO / VQA v2-format data.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=("caption", "vqa"), help="what to train")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--config", help="YAML run config")
    parser.add_argument("--out", help="run folder (same as out=...)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its last checkpoint (uses its config.yaml)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # heavy: torch; the CLI imports every command to build --help
    from mmapp.trainer import Run

    overrides = [f"task={args.task}", *args.overrides]
    config_file = args.config
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "last.safetensors").is_file():
            raise FileNotFoundError(2, "no checkpoint to resume from", str(run_dir / "last.safetensors"))
        config_file = config_file or run_dir / "config.yaml"
        overrides.append(f"out={run_dir}")
    elif args.out:
        overrides.append(f"out={args.out}")
    cfg = load_config(RunConfig, config_file, overrides)
    if args.task == "caption":
        # heavy: torch and the task's data loaders
        from mmapp.tasks.caption import CaptionTask as task
    else:
        # heavy: torch and the task's data loaders
        from mmapp.tasks.vqa import VQATask as task
    result = Run(cfg, task, resume=bool(args.resume), quiet=args.quiet).fit()
    if not args.quiet and os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 reports, once
        print(f"best {result['metric']}: {result['best']:.4f} after {result['epochs']} epochs; "
              f"checkpoints in {cfg.out}")
    return 0
