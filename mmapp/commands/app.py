"""``mmapp app``: serve the Gradio app (captions and answers with attention maps) in a browser."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mmapp.errors import EXIT_BAD_INPUT, EXIT_USAGE

DESCRIPTION = """Serve the web app: upload an image, read its caption with per-word attention maps, ask
questions and get the top-5 answers with the question's attention map. Also serves the HTTP API
(POST /v1/caption and /v1/answer; OpenAPI page at /docs) and the Gradio API endpoints /caption and
/answer (see docs/app.md)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="serve the web app (Gradio) and its API", description=DESCRIPTION)
    p.add_argument("--captioner", metavar="CKPT", help="captioner checkpoint (default: the shipped one)")
    p.add_argument("--vqa", metavar="CKPT", help="VQA checkpoint (default: the shipped one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 to serve your network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--max-batch-size", type=int, default=8,
                   help="most concurrent requests run as one model call (default 8: with more clients, one "
                        "batch runs while the other's replies go out and its next requests come in)")
    p.add_argument("--workers", type=int, default=None,
                   help="batches run at once per model (default: one per CPU core, at most 4, on a CPU; 1 on "
                        "a GPU): on a CPU each runs its batch on its own core")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link (needs internet)")
    p.set_defaults(func=run)


def _missing_checkpoint(kind: str, flag: str, path: object) -> int:
    print(f"mmapp app: no {kind} checkpoint at {path}: train one with `mmapp train "
          f"{'caption' if kind == 'captioner' else 'vqa'}` (README: \"Train on your own data\") and pass it "
          f"with {flag} PATH, or set MMAPP_CHECKPOINTS to the folder holding {path.name}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run(args: argparse.Namespace) -> int:
    # heavy: torch; the CLI imports every command to build --help
    from mmapp.inference import default_checkpoint

    if args.max_batch_size < 1:
        print("mmapp app: --max-batch-size must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.workers is not None and args.workers < 1:
        print("mmapp app: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    paths = {"captioner": Path(args.captioner) if args.captioner else default_checkpoint("captioner"),
             "vqa": Path(args.vqa) if args.vqa else default_checkpoint("vqa")}
    for kind, flag in (("captioner", "--captioner"), ("vqa", "--vqa")):
        if not paths[kind].is_file():
            return _missing_checkpoint(kind, flag, paths[kind])

    from mmapp.distributed import resolve_device
    from mmapp.errors import InputError
    from mmapp.memory import limit_malloc_arenas, release_cuda_code_pages, reuse_freed_memory

    try:
        device = resolve_device(args.device)
    except InputError as e:
        print(f"mmapp app: {e}", file=sys.stderr)
        return EXIT_USAGE
    if device.type == "cpu":  # torch's CUDA libraries never run here: keep them out of the RSS (mmapp/memory.py)
        release_cuda_code_pages()
        limit_malloc_arenas(2 * (os.cpu_count() or 1))  # two per core, not one per request thread
        reuse_freed_memory()  # model calls reuse mapped pages rather than fault in fresh ones
    # heavy: gradio and torch, only when the app is served
    from mmapp.app.ui import build_demo, launch_demo  # sets GRADIO_ANALYTICS_ENABLED before gradio loads
    from mmapp.inference import Captioner, VQAModel

    captioner = Captioner.from_checkpoint(paths["captioner"], device)
    vqa = VQAModel.from_checkpoint(paths["vqa"], device, encoder=captioner.encoder)
    if device.type == "cpu":
        release_cuda_code_pages()  # what loading the models faulted in again
    demo = build_demo(captioner, vqa, max_batch_size=args.max_batch_size, checkpoints=paths,
                      workers=args.workers)
    try:
        launch_demo(demo, host=args.host, port=args.port, share=args.share)
    except OSError as e:
        reason = "the port is in use: pass --port with a free one" if "empty port" in str(e) else str(e)
        print(f"mmapp app: cannot serve on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0
