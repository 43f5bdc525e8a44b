"""Compute the model card figures of a captioner + VQA pair on a shapes split, and optionally
install the pair (float16, with their test figures) as the app's default checkpoints.

    python scripts/model_card.py --captioner runs/shapes_caption/best.safetensors \
        --vqa runs/shapes_vqa/best.safetensors --data data/shapes_test --split test \
        --out runs/model_card [--install checkpoints]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captioner", required=True)
    parser.add_argument("--vqa", required=True)
    parser.add_argument("--data", required=True, help="a shapes dataset folder (mmapp data shapes)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True, help="folder for model_card.json and model_card.md")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N images")
    parser.add_argument("--install", metavar="DIR", help="also write DIR/captioner.safetensors and DIR/vqa.safetensors")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from mmapp.checkpoint import export_for_release
    from mmapp.inference import Captioner, VQAModel
    from mmapp.model_card import evaluate, markdown

    captioner = Captioner.from_checkpoint(args.captioner, args.device)
    vqa = VQAModel.from_checkpoint(args.vqa, args.device, encoder=captioner.encoder)
    report = evaluate(captioner, vqa, args.data, args.split, limit=args.limit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model_card.json").write_text(json.dumps(report, indent=2))
    (out / "model_card.md").write_text(markdown(report))
    print(markdown(report))
    if args.install:
        summary = {"split": f"{args.data}:{args.split}", "images": report["images"]}
        export_for_release(args.captioner, Path(args.install) / "captioner.safetensors",
                           {**summary, **report["captions"], "chair_i": report["hallucination"]["chair_i"],
                            "pointing_game": (report["caption_grounding"] or {}).get("hit_rate")})
        export_for_release(args.vqa, Path(args.install) / "vqa.safetensors",
                           {**summary, "accuracy": report["vqa"]["overall"],
                            "per_question_type": report["vqa"]["per_question_type"],
                            "pointing_game": (report["vqa_grounding"] or {}).get("hit_rate")})
        print(f"installed into {args.install}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
