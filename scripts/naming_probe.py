"""How well can the frozen grid name an object it has not seen this picture of? (issue 15's diagnosis)

The objects test split shows held-out source images of known classes (``mmapp data objects``:
a class with two or more pictures keeps one out of training). This script measures the ceiling of
naming them from the encoder's cached grid, whatever model sits on top, and what the encoder's own
ImageNet classifier knows that the training scenes do not teach:

* **probe**: each object's grid cells inside its box, mean-pooled (the encoder's 1280 head channels),
  and a linear probe over the training nouns (logistic regression, inputs standardised, Adam),
  trained on every object of the training scenes and scored on every object of the test scenes,
  overall and per source (photographs / 3D renders / drawings);
* **ImageNet**: the encoder's ImageNet classifier on the same pooled features, its 1000 classes
  matched to the nouns as the heads match them (``imagenet_evidence.match_answers``: a lemma of the
  class, or the head word of a WordNet synset above it: "golden retriever" is a dog), zero-shot,
  scored on the test objects whose noun has a match (the argmax over matched nouns only);
* **probe + beta x ImageNet**: the probe trained with the matched nouns' ImageNet log-probability
  (renormalised over the matched classes) added to its logits with a fixed weight beta;
* the same three on the committed real photos (``datasets/real_photos``), whole image pooled.

    python scripts/naming_probe.py --train data/mix --test data/objects_test --out runs/naming_probe.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmapp.data.feature_cache import FeatureCache
from mmapp.data.objects.real_photos import load_real_photos
from mmapp.data.objects.sources import read_vocabulary
from mmapp.images import preprocess
from mmapp.config import EncoderConfig
from mmapp.models.encoder import build_encoder
from mmapp.models.imagenet_evidence import ImageNetEvidence, imagenet_hypernyms, imagenet_lemmas, match_answers

HEAD_CHANNELS = 1280  # EfficientNet-Lite0's head: what its ImageNet classifier reads


def boxed_objects(data: Path, features: Path, split: str) -> tuple[torch.Tensor, list[str], list[str]]:
    """Every object (not shape) of a split -> its box-pooled head features (N, 1280), nouns, and
    sources ("tuxpaint" / "emoji" / "noto" / "twemoji", with "+alone" for the only object of its
    scene)."""
    instances = json.loads((data / "annotations" / f"instances_{split}.json").read_text())
    cache = FeatureCache.open(features)
    meta = cache.meta
    side = meta["grid"][0]
    start = meta["dim"] - HEAD_CHANNELS - 3 * meta["encoder"].get("pixel_patch", 0) ** 2  # after the mid stage
    images = {im["id"]: im for im in instances["images"]}
    cats = {c["id"]: c for c in instances["categories"]}
    rows, nouns, sources, grids = [], [], [], {}
    per_image: dict[int, int] = {}
    for a in instances["annotations"]:
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    for a in instances["annotations"]:
        if cats[a["category_id"]]["supercategory"] == "shape":
            continue
        image = images[a["image_id"]]
        if image["id"] not in grids:
            row = cache.find(f"{split}/{image['file_name']}", image["file_name"])
            grids[image["id"]] = torch.from_numpy(cache.get_row(row).astype(np.float32)).view(side, side, -1)
        grid = grids[image["id"]]
        s = side / image["width"]
        x, y, w, h = a["bbox"]
        c0, r0 = int(x * s), int(y * s)
        c1, r1 = max(c0 + 1, int(np.ceil((x + w) * s))), max(r0 + 1, int(np.ceil((y + h) * s)))
        rows.append(grid[r0:r1, c0:c1, start:start + HEAD_CHANNELS].mean(dim=(0, 1)))
        nouns.append(cats[a["category_id"]]["name"])
        sources.append(a.get("source", "?:?").split(":")[0] + ("+alone" if per_image[a["image_id"]] == 1 else ""))
    return torch.stack(rows), nouns, sources


def imagenet_log_prior(pooled: torch.Tensor, classifier: torch.nn.Linear, match: dict[str, list[int]],
                       nouns: list[str]) -> torch.Tensor:
    """pooled (N, 1280) -> (N, len(nouns)): log P(noun) under the ImageNet classifier renormalised over
    the matched classes (a noun's classes summed); 0 for a noun without a match. The heads' own
    ``ImageNetEvidence``, so the probe measures what they are given."""
    matches = [match[n] for n in nouns]
    evidence = ImageNetEvidence(len(ImageNetEvidence.classes_for(matches)), len(nouns), pooled.shape[1])
    with torch.no_grad():
        return evidence.fill(classifier, matches)(pooled)


def train_probe(x: torch.Tensor, y: torch.Tensor, classes: int, prior: torch.Tensor, beta: float,
                epochs: int, seed: int) -> torch.nn.Linear:
    torch.manual_seed(seed)
    probe = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.Adam(probe.parameters(), 1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 256):
            b = order[i:i + 256]
            loss = F.cross_entropy(probe(x[b]) + beta * prior[b], y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return probe


def accuracy_by_source(pred: torch.Tensor, gold: torch.Tensor, sources: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"all": round((pred == gold).float().mean().item(), 4), "n": len(gold)}
    groups = {s.split("+")[0] for s in sources} | {"alone"}
    for s in sorted(groups):
        k = torch.tensor([s in x.split("+") for x in sources])
        out[s] = round((pred[k] == gold[k]).float().mean().item(), 4)
        out[f"n_{s}"] = int(k.sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, required=True, help="data folder with instances_train.json")
    parser.add_argument("--train-features", type=Path, help="default: TRAIN/features448")
    parser.add_argument("--test", type=Path, required=True, help="data folder with instances_SPLIT.json")
    parser.add_argument("--split", default="test", help="the split of --test to score (val: choose beta on it)")
    parser.add_argument("--test-features", type=Path, help="default: TEST/features448")
    parser.add_argument("--betas", default="0,1,2,4", help="weights of the ImageNet prior to try")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the report as JSON here too")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    x_train, n_train, _ = boxed_objects(args.train, args.train_features or args.train / "features448", "train")
    x_test, n_test, s_test = boxed_objects(args.test, args.test_features or args.test / "features448", args.split)
    nouns = sorted(set(n_train))
    index = {n: i for i, n in enumerate(nouns)}
    known = [n in index for n in n_test]
    x_test = x_test[torch.tensor(known)]
    s_test = [s for s, k in zip(s_test, known) if k]
    y_train = torch.tensor([index[n] for n in n_train])
    y_test = torch.tensor([index[n] for n, k in zip(n_test, known) if k])

    meta = FeatureCache.open(args.test_features or args.test / "features448").meta
    encoder = build_encoder(EncoderConfig(**{k: v for k, v in meta["encoder"].items()
                                             if k in EncoderConfig.__dataclass_fields__})).eval()
    classifier = encoder.backbone.classifier
    plurals = {e.noun: e.plural for e in read_vocabulary()}
    match = dict(zip(nouns, match_answers(nouns, imagenet_lemmas(), plurals, imagenet_hypernyms())))
    matched = torch.tensor([bool(match[n]) for n in nouns])
    prior_train = imagenet_log_prior(x_train, classifier, match, nouns)
    prior_test = imagenet_log_prior(x_test, classifier, match, nouns)

    report: dict[str, Any] = {"train_objects": len(x_train), "test_objects": len(x_test), "nouns": len(nouns),
                              "nouns_matched_to_imagenet": int(matched.sum())}
    on_matched = matched[y_test]
    zero_shot = prior_test.masked_fill(~matched, -1e9).argmax(1)
    report["imagenet_zero_shot_on_matched_nouns"] = accuracy_by_source(
        zero_shot[on_matched], y_test[on_matched], [s for s, m in zip(s_test, on_matched.tolist()) if m])

    photos = load_real_photos()
    with torch.no_grad():
        pooled = torch.cat([encoder.backbone.forward_features(preprocess(img.convert("RGB"), encoder.cfg).unsqueeze(0)).mean(dim=(2, 3))
                            for _, img in photos]) if photos else torch.zeros(0, HEAD_CHANNELS)
    prior_photos = imagenet_log_prior(pooled, classifier, match, nouns)
    report["real_photos_imagenet"] = {spec.name: nouns[int(i)] for (spec, _), i in
                                      zip(photos, prior_photos.masked_fill(~matched, -1e9).argmax(1))}

    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    for beta in [float(b) for b in args.betas.split(",")]:
        probe = train_probe((x_train - mean) / std, y_train, len(nouns), prior_train, beta, args.epochs, args.seed)
        with torch.no_grad():
            pred = (probe((x_test - mean) / std) + beta * prior_test).argmax(1)
            on_photos = (probe((pooled - mean) / std) + beta * prior_photos).argmax(1)
        report[f"probe_beta_{beta:g}"] = accuracy_by_source(pred, y_test, s_test)
        said = {spec.name: nouns[int(i)] for (spec, _), i in zip(photos, on_photos)}
        report[f"real_photos_probe_beta_{beta:g}"] = said
        right = sum(said[spec.name] in spec.nouns for spec, _ in photos if spec.known)
        print(f"probe + {beta:g} x ImageNet: test objects {report[f'probe_beta_{beta:g}']}; "
              f"real photos named {right}/{sum(spec.known for spec, _ in photos)}: {said}", flush=True)
    right = sum(report["real_photos_imagenet"][spec.name] in spec.nouns for spec, _ in photos if spec.known)
    print(f"ImageNet zero-shot: test objects of matched nouns {report['imagenet_zero_shot_on_matched_nouns']}; "
          f"real photos named {right}/{sum(spec.known for spec, _ in photos)}: {report['real_photos_imagenet']}")
    print(f"{report['nouns']} nouns, {report['nouns_matched_to_imagenet']} matched to ImageNet classes; "
          f"{report['train_objects']} training objects, {report['test_objects']} test objects")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
