"""Every figure of the README's model card for a captioner + VQA checkpoint pair on a generated split
(shapes or objects: any folder with COCO captions + instances and VQA v2 files).

VQA accuracy (official metric) per question type; caption BLEU/METEOR/ROUGE-L/CIDEr-D (beam 3);
CHAIR-i hallucination; the pointing game for caption words that name an object and for questions
about one object; the out-of-distribution check on scikit-image photos and on the split's scenes.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mmapp.data.mentions import load_scene_objects, present_keys
from mmapp.inference import Captioner, VQAModel
from mmapp.metrics.caption_metrics import score_captions
from mmapp.metrics.grounding import score_grounding, summarize_grounding
from mmapp.metrics.hallucination import chair
from mmapp.metrics.vqa_accuracy import vqa_accuracy

OOD_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def _load_split(data_dir: Path, split: str) -> dict[str, Any]:
    ann = data_dir / "annotations"
    captions = json.loads((ann / f"captions_{split}.json").read_text())
    lexicon, objects, _ = load_scene_objects(ann / f"instances_{split}.json")
    refs: dict[int, list[str]] = defaultdict(list)
    for a in captions["annotations"]:
        refs[a["image_id"]].append(a["caption"])
    images = {im["id"]: im for im in captions["images"]}
    return {"images": images, "objects": objects, "lexicon": lexicon, "refs": refs,
            "questions": json.loads((ann / f"questions_{split}.json").read_text()),
            "annotations": json.loads((ann / f"annotations_{split}.json").read_text()),
            "image_root": data_dir / "images" / split}


def _encode_all(model: Captioner | VQAModel, paths: list[Path], batch_size: int = 32) -> torch.Tensor:
    out = []
    for start in tqdm(range(0, len(paths), batch_size), desc="encoding", unit="batch", leave=False):
        features, _ = model.encode([str(p) for p in paths[start:start + batch_size]])
        out.append(features.cpu())
    return torch.cat(out)  # (N, P, D)


def caption_figures(captioner: Captioner, features: torch.Tensor, data: dict[str, Any], ids: list[int],
                    beam_size: int = 3, max_len: int = 20, with_meteor: bool = True) -> dict[str, Any]:
    """Decode ``features`` (N, P, D) of images ``ids`` and score the captions: COCO metrics, CHAIR,
    and the pointing game of each word that names an object present in the scene.

    ``data`` holds ``images`` (id -> COCO image record), ``objects`` (id -> ``SceneObject`` list),
    ``lexicon`` (the words that name them) and ``refs`` (id -> reference captions), as
    ``_load_split`` returns.
    """
    captions: dict[int, str] = {}
    grounding, groups = [], []
    for s in range(0, len(ids), 64):
        results = captioner.caption_results(features[s:s + 64], beam_size=beam_size, max_len=max_len)
        for r, image_id in zip(results, ids[s:s + 64]):
            words, att = r.tokens, r.attention  # att (T, H, W)
            captions[image_id] = r.text
            im = data["images"][image_id]
            for m in data["lexicon"].mentions(words):
                if m.category is None:
                    continue  # the pointing game scores nouns of a category ("circle", "cat")
                boxes = [list(o.bbox) for o in data["objects"][image_id] if m.matches(o)]
                if boxes:  # hallucinated mentions are counted by CHAIR, not here
                    scores = [score_grounding(att[m.last], (im["width"], im["height"]), b) for b in boxes]
                    grounding.append(max(scores, key=lambda g: (g.hit, g.mass)))
                    groups.append(m.category)
    present = present_keys({i: data["objects"][i] for i in ids})
    return {"captions": captions, "grounding": grounding, "groups": groups,
            "scores": score_captions({i: data["refs"][i] for i in ids}, captions, with_meteor=with_meteor),
            "hallucination": chair(captions, present, data["lexicon"].chair_keys)}


def evaluate(captioner: Captioner, vqa: VQAModel, data_dir: str | Path, split: str = "test",
             beam_size: int = 3, limit: int = 0, with_meteor: bool = True) -> dict[str, Any]:
    """All model-card figures for one split of a generated dataset folder."""
    start = time.perf_counter()
    data = _load_split(Path(data_dir), split)
    ids = sorted(data["images"])[: limit or None]
    paths = [data["image_root"] / data["images"][i]["file_name"] for i in ids]
    features = _encode_all(captioner, paths)  # (N, P, D)
    # The two models may read different grids (e.g. 224 joined vs 448 last): encode for each.
    vqa_features = features if vqa.encoder is captioner.encoder else _encode_all(vqa, paths)

    cap = caption_figures(captioner, features, data, ids, beam_size, with_meteor=with_meteor)
    captions, word_scores, word_groups = cap["captions"], cap["grounding"], cap["groups"]
    caption_scores, hallucination = cap["scores"], cap["hallucination"]

    vqa_out = vqa_figures(vqa, vqa_features, data, ids)
    accuracy = vqa_out["accuracy"]

    report = {
        "split": split, "images": len(ids), "questions": len(vqa_out["results"]), "beam_size": beam_size,
        "captions": {k: v for k, v in caption_scores.overall.items()},
        "hallucination": {k: hallucination[k] for k in ("chair_i", "chair_s", "num_mentions", "num_hallucinated")},
        "caption_grounding": summarize_grounding(word_scores, word_groups) if word_scores else None,
        "vqa": {k: accuracy[k] for k in ("overall", "per_question_type", "per_answer_type")},
        "vqa_grounding": vqa_out["grounding"],
        "ood": ood_report(captioner, features),
        "examples": [{"image_id": i, "caption": captions[i], "references": data["refs"][i][:2]} for i in ids[:5]],
    }
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report


def vqa_figures(vqa: VQAModel, features: torch.Tensor, data: dict[str, Any], ids: list[int],
                batch_size: int = 256) -> dict[str, Any]:
    """Answer every question about images ``ids`` (their grids ``features`` (N, P, D), in that order;
    ``data`` as ``_load_split`` returns) and score: ``results`` (official format), ``accuracy``
    (``vqa_accuracy``: overall, per question type, per question), ``grounding``: the pointing game of
    the questions about one object, on the glimpses' mean map, and for a generative head
    ``answer_grounding``: the same on the mean of the answer words' maps."""
    row = {image_id: r for r, image_id in enumerate(ids)}
    anns = {a["question_id"]: a for a in data["annotations"]["annotations"]}
    questions = [q for q in data["questions"]["questions"] if q["image_id"] in row]
    results, q_scores, q_groups, word_scores = [], [], [], []
    for s in range(0, len(questions), batch_size):
        chunk = questions[s:s + batch_size]
        rows = torch.tensor([row[q["image_id"]] for q in chunk])
        answered = vqa.answer_results(features.index_select(0, rows), [q["question"] for q in chunk], top_k=1)
        for q, r in zip(chunk, answered):
            results.append({"question_id": q["question_id"], "answer": r.answers[0][0]})
            ann = anns[q["question_id"]]
            if len(ann.get("object_ids", [])) == 1:
                obj = next(o for o in data["objects"][q["image_id"]] if o.id == ann["object_ids"][0])
                im = data["images"][q["image_id"]]
                size = (im["width"], im["height"])
                q_scores.append(score_grounding(r.attention, size, list(obj.bbox)))
                q_groups.append(ann["question_type"])
                if len(r.tokens):
                    word_scores.append(score_grounding(r.word_attention.mean(axis=0), size, list(obj.bbox)))
    sub_questions = dict(data["questions"], questions=questions)
    sub_annotations = dict(data["annotations"], annotations=[anns[q["question_id"]] for q in questions])
    return {"results": results, "accuracy": vqa_accuracy(results, sub_questions, sub_annotations),
            "grounding": summarize_grounding(q_scores, q_groups) if q_scores else None,
            "answer_grounding": (summarize_grounding(word_scores, q_groups)
                                 if word_scores and len(word_scores) == len(q_scores) else None)}


def ood_report(model: Captioner, scene_features: torch.Tensor) -> dict[str, Any] | None:
    """Pass rate of in-domain scenes and the flags of the scikit-image photos."""
    import skimage.data  # heavy: scikit-image

    if model.ood is None:
        return None
    scenes = model.domain_checks(scene_features)
    photos = {}
    for name in OOD_PHOTOS:
        (result,) = model.caption(getattr(skimage.data, name)(), beam_size=1, max_len=1)
        photos[name] = {"score": round(result.domain.score, 3), "flagged": result.domain.out_of_domain}
    return {"threshold": model.ood.threshold,
            "scene_pass_rate": float(np.mean([not c.out_of_domain for c in scenes])), "photos": photos}


def markdown(report: dict[str, Any]) -> str:
    """The model card's tables."""
    c, v = report["captions"], report["vqa"]
    lines = [f"Split `{report['split']}`: {report['images']} images, {report['questions']} questions, "
             f"beam {report['beam_size']}.", "", "| figure | value |", "|---|---|"]
    for k in ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"):
        val = c.get(k)
        lines.append(f"| caption {k} | {val:.3f} |" if isinstance(val, float) else f"| caption {k} | n/a |")
    h = report["hallucination"]
    lines.append(f"| hallucinated objects (CHAIR-i) | {h['chair_i']:.3f} |")
    if report["caption_grounding"]:
        g = report["caption_grounding"]
        lines.append(f"| caption words: pointing game | {g['hit_rate']:.3f} (n={g['n']}, chance {g['chance']:.3f}) |")
    lines.append(f"| VQA accuracy (official) | {v['overall']:.3f} |")
    for t, acc in sorted(v["per_question_type"].items()):
        lines.append(f"| VQA accuracy, {t} | {acc:.3f} |")
    if report["vqa_grounding"]:
        g = report["vqa_grounding"]
        lines.append(f"| questions about one object: pointing game | {g['hit_rate']:.3f} (n={g['n']}, "
                     f"chance {g['chance']:.3f}) |")
        for t, s in sorted(g.get("by_group", {}).items()):
            lines.append(f"| pointing game, {t} questions | {s['hit_rate']:.3f} (n={s['n']}) |")
    if report["ood"]:
        o = report["ood"]
        lines.append(f"| in-domain scenes passing the OOD check | {o['scene_pass_rate']:.3f} |")
        flagged = ", ".join(f"{k} {'flagged' if p['flagged'] else 'NOT flagged'}" for k, p in o["photos"].items())
        lines.append(f"| scikit-image photos | {flagged} |")
    return "\n".join(lines) + "\n"
