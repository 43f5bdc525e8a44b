"""``mmapp caption`` and ``mmapp ask``: run the models on images from the command line."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--checkpoint", help="model checkpoint (.safetensors); default: the shipped one")
    common.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    common.add_argument("--json", action="store_true", help="print JSON instead of text")

    cap = sub.add_parser("caption", parents=[common], help="caption images",
                         description="Caption one or more images with the attention-LSTM captioner.")
    cap.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    cap.add_argument("--beam-size", type=int, default=3, help="beam width (1 = greedy; default 3)")
    cap.add_argument("--max-len", type=int, default=20, help="maximum caption length in words (default 20)")
    cap.add_argument("--attention", action="store_true", help="with --json: include per-word attention maps")
    cap.set_defaults(func=run_caption)

    ask = sub.add_parser("ask", parents=[common], help="answer a question about an image",
                         description="Answer a question about an image with the question-attention VQA model.")
    ask.add_argument("image", metavar="IMAGE", help="image file")
    ask.add_argument("question", metavar="QUESTION", help='e.g. "what color is the circle?"')
    ask.add_argument("--top-k", type=int, default=5, help="how many answers to show (default 5)")
    ask.add_argument("--attention", action="store_true", help="with --json: include the attention map")
    ask.set_defaults(func=run_ask)


def run_caption(args: argparse.Namespace) -> int:
    from mmapp.inference import Captioner, default_checkpoint

    model = Captioner.from_checkpoint(args.checkpoint or default_checkpoint("captioner"), args.device)
    results = model.caption(args.images, beam_size=args.beam_size, max_len=args.max_len)
    if args.json:
        out = []
        for path, r in zip(args.images, results):
            item = {"image": path, "caption": r.text, "tokens": r.tokens, "score": r.score}
            if args.attention:
                item["attention"] = r.attention.round(5).tolist()
            out.append(item)
        print(json.dumps(out, indent=2))
    else:
        for path, r in zip(args.images, results):
            print(f"{path}\t{r.text}\t(log-prob {r.score:.2f})")
    return 0


def run_ask(args: argparse.Namespace) -> int:
    from mmapp.inference import VQAModel, default_checkpoint

    model = VQAModel.from_checkpoint(args.checkpoint or default_checkpoint("vqa"), args.device)
    (r,) = model.answer(args.image, args.question, top_k=args.top_k)
    if args.json:
        item = {"image": args.image, "question": r.question,
                "answers": [{"answer": a, "probability": p} for a, p in r.answers]}
        if args.attention:
            item["attention"] = r.attention.round(5).tolist()
        print(json.dumps(item, indent=2))
    else:
        print(f"Q: {r.question}")
        for a, p in r.answers:
            print(f"  {p:6.1%}  {a}")
    return 0
