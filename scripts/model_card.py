"""Compute the model card figures of a captioner + VQA pair on one or more test splits (e.g. the
shapes and the objects test splits), optionally on the real photographs that ship in packages, and
optionally install the pair (float16, with their test figures) as the app's default checkpoints.

    python scripts/model_card.py --captioner runs/default_caption/best.safetensors \
        --vqa runs/default_vqa/best.safetensors --data shapes=data/shapes_test \
        --data objects=data/objects_test --split test --real-photos --out runs/model_card \
        [--install checkpoints]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _named(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    return (name, path) if sep else (Path(value).name, value)


def _knows(folders: list[str], split: str) -> dict[str, list[str]]:
    """{supercategory: sorted class names} of the datasets' categories: what the models were trained on."""
    out: dict[str, set[str]] = {}
    for folder in folders:
        data = json.loads((Path(folder) / "annotations" / f"instances_{split}.json").read_text())
        for c in data["categories"]:
            out.setdefault(c.get("supercategory", ""), set()).add(c["name"])
    return {k: sorted(v) for k, v in sorted(out.items())}


def _real_photos(captioner, vqa) -> dict:
    """scripts/real_photos.py's rows and totals for the committed photo list."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real_photos import score_photos, totals

    from mmapp.data.objects.real_photos import load_real_photos
    from mmapp.data.objects.sources import read_vocabulary

    skipped: list = []
    photos = load_real_photos(None, skipped)
    rows = score_photos(captioner, vqa, photos, {e.noun: e.plural for e in read_vocabulary()})
    return {"photos": rows, "totals": totals(rows), "skipped": [{"name": s.name, "reason": r} for s, r in skipped]}


def _real_photos_markdown(report: dict) -> str:
    def ood(v: dict | None) -> str:
        return "n/a" if v is None else ("flagged" if v["out_of_domain"] else "passes") + f" ({v['score']:.2f})"

    lines = ["| package | known things | captions name them | 'what is this?' right | known, flagged OOD "
             "(captioner / VQA) | unknown things | unknown, flagged OOD (captioner / VQA) |", "|---|---|---|---|---|---|---|"]
    for package, t in report["totals"]["by_package"].items():
        lines.append(f"| {package} | {t['known_photos']} | {t['caption_names_it']} | {t['answer_right']} | "
                     f"{t['known_flagged_out_of_domain']['captioner']} / {t['known_flagged_out_of_domain']['vqa']} | "
                     f"{t['unknown_photos']} | {t['unknown_flagged_out_of_domain']['captioner']} / "
                     f"{t['unknown_flagged_out_of_domain']['vqa']} |")
    lines += ["", "| photo | right nouns | caption (beam 3) | names it | 'what is this?' | right | OOD (captioner / VQA) |",
              "|---|---|---|---|---|---|---|"]
    for r in report["photos"]:
        known = r["known"]
        lines.append(f"| {r['name']} | {', '.join(r['nouns']) or '(unknown thing)'} | {r['caption']} | "
                     f"{('yes' if r['caption_names_it'] else 'no') if known else '-'} | {r['answer']} ({r['p']:.2f}) | "
                     f"{('yes' if r['answer_right'] else 'no') if known else '-'} | "
                     f"{ood(r['ood_captioner'])} / {ood(r['ood_vqa'])} |")
    t = report["totals"]
    k, u = t["known_photos"], t["unknown_photos"]
    lines += ["", f"Known things ({k} photos): captions name them {t['caption_names_it']}/{k}, 'what is this?' right "
              f"{t['answer_right']}/{k}, passing the out-of-domain check {k - t['known_flagged_out_of_domain']['vqa']}/{k} "
              f"(VQA) and {k - t['known_flagged_out_of_domain']['captioner']}/{k} (captioner). Unknown things ({u}): "
              f"flagged {t['unknown_flagged_out_of_domain']['vqa']}/{u} (VQA), "
              f"{t['unknown_flagged_out_of_domain']['captioner']}/{u} (captioner). Each known thing counted once "
              f"({t['known_things']} things, its photos averaged): captions name {t['things_caption_names']}, "
              f"'what is this?' right {t['things_answer_right']}. Known told from unknown things (ROC area, "
              f"0.5 = chance): the out-of-domain score {t['known_from_unknown']['ood_captioner']} (captioner), "
              f"{t['known_from_unknown']['ood_vqa']} (VQA); the probability of the answer to 'what is this?' "
              f"{t['known_from_unknown']['answer_probability']}."]
    for s in report["skipped"]:
        lines.append(f"Skipped {s['name']}: {s['reason']}.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captioner", required=True)
    parser.add_argument("--vqa", required=True)
    parser.add_argument("--data", required=True, action="append", type=_named, metavar="[NAME=]DIR",
                        help="a generated dataset folder (mmapp data shapes / objects); repeat for several")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True, help="folder for model_card.json and model_card.md")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N images of each split")
    parser.add_argument("--real-photos", action="store_true",
                        help="also caption and question the real photographs of datasets/real_photos/photos.json")
    parser.add_argument("--install", metavar="DIR", help="also write DIR/captioner.safetensors and DIR/vqa.safetensors")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from mmapp.checkpoint import export_for_release
    from mmapp.inference import Captioner, VQAModel
    from mmapp.model_card import evaluate, markdown

    captioner = Captioner.from_checkpoint(args.captioner, args.device)
    vqa = VQAModel.from_checkpoint(args.vqa, args.device, encoder=captioner.encoder)
    reports = {name: evaluate(captioner, vqa, path, args.split, limit=args.limit) for name, path in args.data}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(f"### {name}\n\n{markdown(r)}" for name, r in reports.items())
    if args.real_photos:
        reports["real_photos"] = _real_photos(captioner, vqa)
        text += "\n### real photos\n\n" + _real_photos_markdown(reports["real_photos"])
    (out / "model_card.json").write_text(json.dumps(reports, indent=2))
    (out / "model_card.md").write_text(text)
    print(text)
    if args.install:
        splits = {name: r for name, r in reports.items() if name != "real_photos"}
        cap = {name: {"split": f"{path}:{args.split}", "images": splits[name]["images"], **splits[name]["captions"],
                      "chair_i": splits[name]["hallucination"]["chair_i"],
                      "pointing_game": (splits[name]["caption_grounding"] or {}).get("hit_rate")}
               for name, path in args.data}
        ans = {name: {"split": f"{path}:{args.split}", "images": splits[name]["images"],
                      "accuracy": splits[name]["vqa"]["overall"],
                      "per_question_type": splits[name]["vqa"]["per_question_type"],
                      "pointing_game": (splits[name]["vqa_grounding"] or {}).get("hit_rate")}
               for name, path in args.data}
        knows = _knows([path for _, path in args.data], args.split)
        export_for_release(args.captioner, Path(args.install) / "captioner.safetensors", cap, knows=knows)
        export_for_release(args.vqa, Path(args.install) / "vqa.safetensors", ans, knows=knows)
        print(f"installed into {args.install}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
