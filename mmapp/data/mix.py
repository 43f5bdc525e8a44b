"""One dataset from several generated ones (e.g. shapes + objects), to train one model on both.

The generators number their images from disjoint offsets, so the records are concatenated
unchanged: per split, COCO captions, instances (categories merged by name, attribute lists
joined), VQA questions and annotations, and one Karpathy file. Images are linked, not copied:
``OUT/images/<split>/<file>`` is a symbolic link to the source dataset's file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from mmapp.atomic import write_json
from mmapp.data.scene_writer import SPLITS
from mmapp.errors import InputError

_FILES = ("captions", "instances", "questions", "annotations")


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read ({e})") from None


def _write(obj: Any, path: Path) -> None:
    write_json(path, obj, separators=(",", ":"))


def _merge_instances(parts: list[tuple[Path, dict]]) -> dict:
    categories: dict[str, dict] = {}
    annotations, images, attributes = [], [], {}
    for path, data in parts:
        remap = {}
        for c in data["categories"]:
            seen = categories.get(c["name"])
            if seen is not None and seen.get("supercategory") != c.get("supercategory"):
                raise InputError(f"{path}: category {c['name']!r} is a {c.get('supercategory')!r} here but a "
                                 f"{seen.get('supercategory')!r} in another dataset: one name, one thing")
            if seen is None:
                seen = categories[c["name"]] = dict(c, id=len(categories) + 1)
            remap[c["id"]] = seen["id"]
        annotations += [dict(a, category_id=remap[a["category_id"]]) for a in data["annotations"]]
        images += data["images"]
        for k, v in data.get("attributes", {}).items():
            attributes.setdefault(k, [])
            attributes[k] += [x for x in v if x not in attributes[k]]
    out = dict(parts[0][1], images=images, annotations=annotations, categories=list(categories.values()))
    if attributes:
        out["attributes"] = attributes
    return out


def mix_datasets(sources: Sequence[str | Path], out_dir: str | Path) -> dict[str, dict[str, int]]:
    """Write the union of ``sources`` (generated dataset folders) to ``out_dir``; returns images
    per split per source. Refuses repeated image ids and one name used for two kinds of thing."""
    out = Path(out_dir)
    if not sources:
        raise InputError("give at least one dataset folder to mix")
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    karpathy: list[dict] = []
    for split in SPLITS:
        found = [Path(s) for s in sources if (Path(s) / "annotations" / f"captions_{split}.json").is_file()]
        if not found:
            continue
        merged: dict[str, Any] = {}
        names: dict[Path, list[str]] = {}
        for kind in _FILES:
            parts = [(p / "annotations" / f"{kind}_{split}.json", None) for p in found]
            parts = [(path, _read(path)) for path, _ in parts]
            if kind == "instances":
                merged[kind] = _merge_instances(parts)
                continue
            key = {"captions": "annotations", "questions": "questions", "annotations": "annotations"}[kind]
            data = dict(parts[0][1])
            data[key] = [r for _, d in parts for r in d[key]]
            if kind == "captions":
                data["images"] = [im for _, d in parts for im in d["images"]]
                names = {p: [im["file_name"] for im in d["images"]] for p, (_, d) in zip(found, parts)}
            merged[kind] = data
        ids = [im["id"] for im in merged["captions"]["images"]]
        if len(ids) != len(set(ids)):
            raise InputError(f"split {split}: the datasets share image ids; mix datasets of different generators")
        image_dir = out / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        for p in found:
            counts.setdefault(str(p), {})[split] = len(names[p])
            for name in names[p]:
                link = image_dir / name
                if not link.is_symlink():
                    link.symlink_to((p / "images" / split / name).resolve())
        for kind, data in merged.items():
            _write(data, out / "annotations" / f"{kind}_{split}.json")
    for p in (Path(s) for s in sources):
        for f in sorted((p / "annotations").glob("dataset_*.json")):
            karpathy += _read(f)["images"]
    sentid = 0
    for imgid, im in enumerate(karpathy):
        im["imgid"] = imgid
        for s in im["sentences"]:
            s["imgid"], s["sentid"] = imgid, sentid
            sentid += 1
        im["sentids"] = [s["sentid"] for s in im["sentences"]]
    _write({"dataset": "mix", "images": karpathy}, out / "annotations" / "dataset_mix.json")
    return counts
