"""Cut the first N images of a generated dataset's split into a small sample folder (annotations
filtered to them, images copied), as committed under datasets/*_sample/ for the checkpoint tests.

    python scripts/make_sample.py data/objects_test --split test -n 40 --out datasets/objects_sample
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a dataset folder written by `mmapp data shapes|objects`")
    parser.add_argument("--split", default="test")
    parser.add_argument("-n", type=int, default=40, help="images to keep (default 40)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    ann, out_ann = args.data / "annotations", args.out / "annotations"
    out_ann.mkdir(parents=True, exist_ok=True)
    (args.out / "images" / args.split).mkdir(parents=True, exist_ok=True)
    captions = json.loads((ann / f"captions_{args.split}.json").read_text())
    keep = {im["id"] for im in captions["images"][: args.n]}
    for kind, key in (("captions", "annotations"), ("instances", "annotations"), ("questions", "questions"),
                      ("annotations", "annotations")):
        data = json.loads((ann / f"{kind}_{args.split}.json").read_text())
        data[key] = [r for r in data[key] if r["image_id"] in keep]
        if "images" in data:
            data["images"] = [im for im in data["images"] if im["id"] in keep]
        (out_ann / f"{kind}_{args.split}.json").write_text(json.dumps(data, separators=(",", ":")))
    for karpathy in ann.glob("dataset_*.json"):
        data = json.loads(karpathy.read_text())
        data["images"] = [im for im in data["images"] if im["cocoid"] in keep]
        (out_ann / karpathy.name).write_text(json.dumps(data, separators=(",", ":")))
    for im in captions["images"][: args.n]:
        shutil.copyfile(args.data / "images" / args.split / im["file_name"],
                        args.out / "images" / args.split / im["file_name"])
    print(f"{args.out}: {len(keep)} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
