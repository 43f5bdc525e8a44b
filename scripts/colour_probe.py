"""Linear probes: how well can an object's colour and shape be read off the grid cell at its centre?

Compares the encoder's cached grid, the cell's k x k average-pooled pixels (what
``encoder.pixel_patch=k`` appends) and both, on a shapes dataset (``mmapp data shapes``):

    python scripts/colour_probe.py --data data/shapes --features data/shapes/features

Each probe is a logistic regression (inputs standardised, Adam, full batch) trained on the first
``--train-objects`` objects of the train split and scored on the first ``--val-objects`` of val.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _objects(data: Path, split: str, limit: int) -> list[tuple[dict, list[float], str, str]]:
    instances = json.loads((data / "annotations" / f"instances_{split}.json").read_text())
    names = {c["id"]: c["name"] for c in instances["categories"]}
    images = {im["id"]: im for im in instances["images"]}
    return [(images[a["image_id"]], a["bbox"], a["color"], names[a["category_id"]])
            for a in instances["annotations"]][:limit]


def _inputs(objects: list, data: Path, split: str, cache, k: int) -> tuple[np.ndarray, np.ndarray]:
    """-> grid cells (N, D) and pixel patches (N, 3 k^2) at each object's centre cell."""
    H, W = cache.grid_size
    cells, patches = [], []
    for im, (x, y, w, h), _, _ in objects:
        row = int((y + h / 2) / im["height"] * H)
        col = int((x + w / 2) / im["width"] * W)
        grid = cache.get_row(cache.find(im["id"], im["file_name"])).reshape(H, W, -1)
        cells.append(grid[row, col].astype(np.float32))
        image = Image.open(data / "images" / split / im["file_name"]).convert("RGB")
        pixels = np.asarray(image.resize((W * k, H * k), Image.BILINEAR), dtype=np.float32) / 255.0
        patches.append(pixels[row * k:(row + 1) * k, col * k:(col + 1) * k].transpose(2, 0, 1).reshape(-1))
    return np.stack(cells), np.stack(patches)


def probe(train_x: np.ndarray, train_y: list[str], val_x: np.ndarray, val_y: list[str], steps: int = 300) -> float:
    """Validation accuracy of a logistic regression fitted on the training inputs."""
    labels = sorted(set(train_y))
    a, b = torch.from_numpy(train_x), torch.from_numpy(val_x)
    mean, std = a.mean(0), a.std(0) + 1e-6
    a, b = (a - mean) / std, (b - mean) / std
    ya = torch.tensor([labels.index(v) for v in train_y])
    yb = torch.tensor([labels.index(v) if v in labels else -1 for v in val_y])
    torch.manual_seed(0)
    linear = torch.nn.Linear(a.shape[1], len(labels))
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(linear(a), ya)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((linear(b).argmax(1) == yb).float().mean())


def main() -> None:
    from mmapp.data.feature_cache import FeatureCache

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a shapes dataset folder")
    parser.add_argument("--features", type=Path, required=True, help="its feature cache (train and val images)")
    parser.add_argument("--pixels", type=int, default=4, help="k of the k x k pixel patch (default 4)")
    parser.add_argument("--train-objects", type=int, default=6000)
    parser.add_argument("--val-objects", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cache = FeatureCache.open(args.features)
    train = _objects(args.data, "train", args.train_objects)
    val = _objects(args.data, "val", args.val_objects)
    grid_a, pix_a = _inputs(train, args.data, "train", cache, args.pixels)
    grid_b, pix_b = _inputs(val, args.data, "val", cache, args.pixels)
    print(f"{len(train)} train / {len(val)} val objects; grid {cache.dim} channels, pixels {pix_a.shape[1]}")
    for name, a, b in [("grid", grid_a, grid_b), ("pixels", pix_a, pix_b),
                       ("grid + pixels", np.hstack([grid_a, pix_a]), np.hstack([grid_b, pix_b]))]:
        colour = probe(a, [o[2] for o in train], b, [o[2] for o in val])
        shape = probe(a, [o[3] for o in train], b, [o[3] for o in val])
        print(f"{name:>14}: colour {colour:.3f}  shape {shape:.3f}", flush=True)


if __name__ == "__main__":
    main()
