"""Self-describing, safe checkpoints: one ``.safetensors`` file per model.

The file holds the tensors (model weights, and for a training checkpoint the optimizer state) and,
in its safetensors metadata, one JSON document: model kind, configs, encoder preprocessing and weights
hash, vocabulary/answers and training metadata. Nothing is unpickled when loading. Writes are
atomic: a temporary file in the same folder, fsync, then ``os.replace``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from mmapp.atomic import atomic_path
from mmapp.config import CaptionDecoderConfig, EncoderConfig, VQAConfig, from_dict, to_dict
from mmapp.errors import CheckpointError
from mmapp.models.caption_decoder import build_caption_decoder
from mmapp.models.encoder import build_encoder
from mmapp.models.answer_decoder import build_vqa_net

FORMAT = "mmapp"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Atomically write ``tensors`` and the JSON-serialisable ``meta`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"refusing to write {path}: tensor {name} has NaN or infinite values")
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "meta": json.dumps(meta)}
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=header)
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, without reading its tensors."""
    return _open(Path(path), with_tensors=False)[1]


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict]:
    """(tensors, meta) of a checkpoint, or one ``CheckpointError`` naming the file and the problem."""
    return _open(Path(path), with_tensors=True, device=str(device))


def _open(path: Path, with_tensors: bool, device: str = "cpu") -> tuple[dict[str, Tensor], dict]:
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint is not a file: {path}")
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            header = f.metadata() or {}
            if header.get("format") != FORMAT:
                raise CheckpointError(f"{path} is a safetensors file but not an mmapp checkpoint "
                                      "(no mmapp metadata)")
            version = int(header.get("format_version", "0"))
            if version > FORMAT_VERSION:
                raise CheckpointError(f"{path} has checkpoint format {version}; this mmapp reads up to "
                                      f"{FORMAT_VERSION}: upgrade mmapp")
            meta = json.loads(header["meta"])
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
        size = path.stat().st_size
        raise CheckpointError(f"{path} is truncated or corrupt ({size} bytes): {e}") from None
    return tensors, meta


# ----------------------------------------------------------------------------------------------
# Nested training state (optimizer, scheduler, RNG) <-> flat tensors + JSON, without pickle.


def flatten_state(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """Replace every tensor/array in a nested structure by a reference into ``tensors``."""
    if isinstance(obj, Tensor):
        tensors[prefix] = obj.detach().cpu()
        return {"__tensor__": prefix}
    if isinstance(obj, np.ndarray):
        tensors[prefix] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": prefix}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"cannot store dict keys of types {set(type(k) for k in obj)}")
        return {"__dict__": [[k, flatten_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot store a {type(obj).__name__} at {prefix}")


def unflatten_state(tree: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of ``flatten_state``."""
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__ndarray__" in tree:
            return tensors[tree["__ndarray__"]].numpy()
        if "__dict__" in tree:
            return {k: unflatten_state(v, tensors) for k, v in tree["__dict__"]}
        if "__tuple__" in tree:
            return tuple(unflatten_state(v, tensors) for v in tree["__tuple__"])
    if isinstance(tree, list):
        return [unflatten_state(v, tensors) for v in tree]
    return tree


def prefixed(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors whose names start with ``prefix.``, with the prefix removed."""
    start = prefix + "."
    return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}


# ----------------------------------------------------------------------------------------------
# Model checkpoints: a head (caption decoder or VQA net) + everything needed to rebuild it.

KINDS = ("captioner", "vqa")


def save_model(path: str | Path, kind: str, head: torch.nn.Module, encoder: Any,
               vocab: Any, answers: Any = None, training: dict | None = None,
               extra_tensors: dict[str, Tensor] | None = None, extra_meta: dict | None = None,
               half: bool = False) -> Path:
    """Write a self-describing model checkpoint.

    ``encoder`` is the ``Encoder`` whose grids the head was trained on: its config (preprocessing
    included) and weights hash are recorded; its weights are stored only when some were fine-tuned
    or when they are random (``weights="none"``: nothing could rebuild them); frozen ImageNet weights
    come from their package.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    tensors = {f"model.{k}": v.half() if half and v.is_floating_point() else v for k, v in head.state_dict().items()}
    if encoder.cfg.fine_tune_stages > 0 or encoder.weights_id() == "random":
        tensors.update({f"encoder.{k}": v for k, v in encoder.state_dict().items()})
    tensors.update(extra_tensors or {})
    meta = {
        "kind": kind,
        "model": to_dict(head.cfg),
        "encoder": to_dict(encoder.cfg),
        "encoder_weights_id": encoder.weights_id(),
        "grid": list(encoder.grid_size()),
        "vocab": vocab.to_dict(),
        "answers": answers.to_dict() if answers is not None else None,
        "training": training or {},
        **(extra_meta or {}),
    }
    return save_checkpoint(path, tensors, meta)


def load_head(path: str | Path, kind: str | None = None, device: str | torch.device = "cpu"
              ) -> tuple[torch.nn.Module, dict, dict[str, Tensor]]:
    """Rebuild the head stored in a model checkpoint: (head in eval mode, meta, all tensors)."""
    path = Path(path)
    tensors, meta = read_checkpoint(path)
    found = meta.get("kind")
    if found not in KINDS:
        raise CheckpointError(f"{path} does not hold a model (kind {found!r})")
    if kind is not None and found != kind:
        raise CheckpointError(f"{path} holds a {found} model, not a {kind} model")
    try:
        if found == "captioner":
            head = build_caption_decoder(from_dict(CaptionDecoderConfig, meta["model"]))
        else:
            head = build_vqa_net(from_dict(VQAConfig, meta["model"]))  # either vqa.head
        weights = {k: v.float() if v.is_floating_point() else v for k, v in prefixed(tensors, "model").items()}
        head.load_state_dict(weights, strict=True)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()] or [type(e).__name__]
        # load_state_dict's first line only names the class; the next one names the tensor.
        first = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
        raise CheckpointError(f"{path}: stored weights or config do not match the model: {first}") from None
    return head.to(device).eval(), meta, tensors


def load_encoder(path: str | Path, meta: dict, tensors: dict[str, Tensor],
                 device: str | torch.device = "cpu") -> Any:
    """The encoder a checkpoint was trained with (package weights, or its own fine-tuned ones), ready
    for inference (BatchNorms folded into the convolutions)."""
    cfg = from_dict(EncoderConfig, meta["encoder"])
    own = prefixed(tensors, "encoder")
    encoder = build_encoder(cfg if not own else _with_weights(cfg, "none"))
    if own:
        encoder.load_state_dict(own, strict=True)
    elif encoder.weights_id() != meta.get("encoder_weights_id"):
        raise CheckpointError(
            f"{path} was trained on encoder weights {meta.get('encoder_weights_id')}, but {cfg.name} "
            f"weights here hash to {encoder.weights_id()}")
    return encoder.to(device).eval().fold_batchnorm()


def _with_weights(cfg: Any, weights: str) -> Any:
    return dataclasses.replace(cfg, weights=weights)


def export_for_release(src: str | Path, dst: str | Path, test_metrics: dict | None = None,
                       half: bool = True, knows: dict[str, list[str]] | None = None) -> Path:
    """Copy a model checkpoint for shipping: no training state, float16 weights, test figures added;
    ``knows``: the things it was trained on, {supercategory: [class names]}, for the model card."""
    tensors, meta = read_checkpoint(src)
    meta.pop("train_state", None)
    tensors = {k: (v.half() if half and k.startswith("model.") and v.is_floating_point() else v)
               for k, v in tensors.items() if not k.startswith(("optim.", "sched.", "scaler.", "rng."))}
    if test_metrics is not None:
        meta["training"] = {**meta.get("training", {}), "test_metrics": test_metrics}
    if knows is not None:
        meta["training"] = {**meta.get("training", {}), "knows": knows}
    return save_checkpoint(dst, tensors, meta)
