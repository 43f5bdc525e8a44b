"""Score a captioner and a VQA model on the real photographs of datasets/real_photos/photos.json.

    python scripts/real_photos.py --captioner checkpoints/captioner.safetensors \
        --vqa checkpoints/vqa.safetensors [--json]

For each photo: the caption (beam 3) and whether it names one of the accepted nouns (whole words,
plurals included), the top answer to "what is this?" with its probability and whether it is one
of them, and each model's out-of-domain verdict (the app's check: score above the checkpoint's
threshold). Photos whose nouns are empty show things the vocabulary lacks: for those only the
out-of-domain verdicts count. Totals at the end; ``--json`` prints one JSON document instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mmapp.data.objects.real_photos import accepted_forms, load_real_photos, names_thing  # noqa: E402
from mmapp.data.objects.sources import read_vocabulary  # noqa: E402

QUESTION = "what is this?"


def _verdict(model, image) -> dict | None:
    features, _ = model.encode(image)
    (check,) = model.domain_checks(features)
    if check is None:
        return None
    return {"score": round(check.score, 3), "threshold": round(float(check.threshold), 3),
            "out_of_domain": check.out_of_domain}


def score_photos(cap, vqa, photos, plurals: dict[str, str]) -> list[dict]:
    rows = []
    for spec, image in photos:
        forms = accepted_forms(spec.nouns, plurals)
        caption = cap.caption(image, beam_size=3)[0].text
        answer, p = vqa.answer(image, QUESTION, top_k=1)[0].answers[0]
        rows.append({
            "name": spec.name, "package": spec.package, "nouns": list(spec.nouns), "known": spec.known,
            "caption": caption, "caption_names_it": spec.known and names_thing(caption, forms),
            "answer": answer, "p": round(float(p), 3),
            "answer_right": spec.known and answer.strip().lower() in forms,
            "ood_captioner": _verdict(cap, image), "ood_vqa": _verdict(vqa, image),
        })
    return rows


def per_thing(known: list[dict], key: str) -> float:
    """Each known thing (its accepted nouns) counted once: the sum over things of the share of its
    photos where ``key`` holds. 28 photos of fish weigh what one photo of a chair does, so the figure
    says how many different things are named, not how often the most photographed one is."""
    things: dict[tuple[str, ...], list[bool]] = {}
    for r in known:
        things.setdefault(tuple(sorted(r["nouns"])), []).append(bool(r[key]))
    return round(sum(sum(v) / len(v) for v in things.values()), 1)


def separation(known: Sequence[float], unknown: Sequence[float]) -> float | None:
    """How well a score tells the known things' photos from the unknown things' (higher: more
    familiar): the chance that a random known photo scores above a random unknown one, ties half
    (the area under the ROC curve; 0.5 is a coin). None without photos of both kinds."""
    if not known or not unknown:
        return None
    above = sum((k > u) + 0.5 * (k == u) for k in known for u in unknown)
    return round(above / (len(known) * len(unknown)), 3)


def separations(known: list[dict], unknown: list[dict]) -> dict:
    """``separation`` of each model's out-of-domain score (negated: low is familiar) and of the
    probability of the top answer to "what is this?"."""
    def ood(group: list[dict], key: str) -> list[float]:
        return [-r[key]["score"] for r in group if r[key]]

    return {"ood_captioner": separation(ood(known, "ood_captioner"), ood(unknown, "ood_captioner")),
            "ood_vqa": separation(ood(known, "ood_vqa"), ood(unknown, "ood_vqa")),
            "answer_probability": separation([r["p"] for r in known], [r["p"] for r in unknown])}


def totals(rows: list[dict], by_package: bool = True) -> dict:
    """Counts over the known and the unknown things (and with ``by_package`` the same per package)."""
    known = [r for r in rows if r["known"]]
    unknown = [r for r in rows if not r["known"]]

    def flagged(group: list[dict], key: str) -> int:
        return sum(1 for r in group if r[key] and r[key]["out_of_domain"])

    return {
        "known_photos": len(known), "unknown_photos": len(unknown),
        "caption_names_it": sum(r["caption_names_it"] for r in known),
        "answer_right": sum(r["answer_right"] for r in known),
        "known_things": len({tuple(sorted(r["nouns"])) for r in known}),
        "things_caption_names": per_thing(known, "caption_names_it"),
        "things_answer_right": per_thing(known, "answer_right"),
        "known_flagged_out_of_domain": {"captioner": flagged(known, "ood_captioner"), "vqa": flagged(known, "ood_vqa")},
        "unknown_flagged_out_of_domain": {"captioner": flagged(unknown, "ood_captioner"), "vqa": flagged(unknown, "ood_vqa")},
        "known_from_unknown": separations(known, unknown),
        **({"by_package": {p: totals([r for r in rows if r["package"] == p], by_package=False)
                           for p in sorted({r["package"] for r in rows})}} if by_package else {}),
    }


def _ood_text(v: dict | None) -> str:
    if v is None:
        return "no OOD statistics"
    return f"{'OUT of domain' if v['out_of_domain'] else 'in domain'} ({v['score']:.2f} vs {v['threshold']:.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captioner", required=True, help="captioner checkpoint")
    parser.add_argument("--vqa", required=True, help="VQA checkpoint")
    parser.add_argument("--photos", help="photo list (default: datasets/real_photos/photos.json)")
    parser.add_argument("--vocabulary", help="vocabulary TSV (default: the committed one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)

    from mmapp.errors import MMAppError, format_error
    from mmapp.inference import Captioner, VQAModel

    try:
        plurals = {e.noun: e.plural for e in read_vocabulary(args.vocabulary)}
        skipped: list = []
        photos = load_real_photos(args.photos, skipped)
        unknown_nouns = sorted({n for spec, _ in photos for n in spec.nouns} - set(plurals))
        if unknown_nouns:
            raise MMAppError(f"accepted nouns not in the vocabulary: {', '.join(unknown_nouns)}")
        cap = Captioner.from_checkpoint(args.captioner, device=args.device)
        vqa = VQAModel.from_checkpoint(args.vqa, device=args.device, encoder=cap.encoder)
    except (MMAppError, OSError) as e:
        print(f"error: {format_error(e)}", file=sys.stderr)
        return 2
    rows = score_photos(cap, vqa, photos, plurals)
    summary = totals(rows)
    if args.json:
        print(json.dumps({"photos": rows, "skipped": [{"name": s.name, "reason": r} for s, r in skipped],
                          "totals": summary}, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']}  (accepted: {', '.join(r['nouns']) or 'none: a thing the models do not know'})")
        named = "names it" if r["caption_names_it"] else "does not name it"
        print(f"  caption: {r['caption']!r}" + (f"  -> {named}" if r["known"] else ""))
        right = "right" if r["answer_right"] else "wrong"
        print(f"  {QUESTION!r} -> {r['answer']!r} (p={r['p']:.2f})" + (f"  -> {right}" if r["known"] else ""))
        print(f"  out-of-domain check: captioner {_ood_text(r['ood_captioner'])}; VQA {_ood_text(r['ood_vqa'])}")
    for spec, reason in skipped:
        print(f"{spec.name}  {reason}")
    k, u = summary["known_photos"], summary["unknown_photos"]
    print(f"\ntotals: captions name the thing {summary['caption_names_it']}/{k}; "
          f"'what is this?' right {summary['answer_right']}/{k}; "
          f"flagged out of domain: known things {summary['known_flagged_out_of_domain']['captioner']}/{k} "
          f"(captioner), {summary['known_flagged_out_of_domain']['vqa']}/{k} (VQA); unknown things "
          f"{summary['unknown_flagged_out_of_domain']['captioner']}/{u} (captioner), "
          f"{summary['unknown_flagged_out_of_domain']['vqa']}/{u} (VQA); skipped {len(skipped)}")
    print(f"each known thing counted once ({summary['known_things']} things, its photos averaged): captions "
          f"name {summary['things_caption_names']}, 'what is this?' right {summary['things_answer_right']}")
    print("known told from unknown things (ROC area, 0.5 = chance): " + ", ".join(
        f"{k} {v}" for k, v in summary["known_from_unknown"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
