"""EfficientNet-Lite0 in plain PyTorch, with timm's ``tf_efficientnet_lite0`` module and parameter names.

The default encoder needs only this backbone, and importing timm (which imports torchvision) costs the
app process about 190 MiB of memory for nothing else. This module builds the same network: the same
state-dict keys (so the packaged ImageNet weights and ``load_backbone_weights`` work unchanged), the
same TensorFlow "same" padding on strided convolutions, the same ``forward_features`` /
``forward_intermediates`` / ``feature_info`` that ``mmapp.models.encoder`` reads. The tests compare its
outputs with timm's on the packaged weights. Other backbones are still built by timm.

Lite0 (Tan & Le 2019, the "lite" variant): stem 3x3/2 to 32 channels, seven stages of MBConv blocks
(no squeeze-excitation, ReLU6), head 1x1 to 1280, BatchNorm eps 1e-3.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# (block kind, repeats, kernel, stride, expansion, out channels) per stage: timm's arch_def for lite0
LITE0_STAGES = (("ds", 1, 3, 1, 1, 16), ("ir", 2, 3, 2, 6, 24), ("ir", 2, 5, 2, 6, 40), ("ir", 3, 3, 2, 6, 80),
                ("ir", 3, 5, 1, 6, 112), ("ir", 4, 5, 2, 6, 192), ("ir", 1, 3, 1, 6, 320))
STEM, HEAD, BN_EPS = 32, 1280, 1e-3


class Conv2dSame(nn.Conv2d):
    """A convolution padded like TensorFlow's ``padding='SAME'``: the output is ceil(input / stride)
    and the odd pixel of padding goes to the bottom/right (what timm's ``Conv2dSame`` does)."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return super().forward(zero_pad(x, left, right, top, bottom))


def zero_pad(x: Tensor, left: int, right: int, top: int, bottom: int) -> Tensor:
    """``F.pad(x, [left, right, top, bottom])`` with zeros, (N, C, H, W) -> (N, C, H+top+bottom, W+left+right),
    in ``x``'s memory format, writing each element once: the image copied in, then only the border
    zeroed. On a channels-last input ``F.pad`` fills the whole output and then copies the image over
    it: 5.4 against 1.3 ms for a (4, 96, 112, 112) map on one thread; through the inference encoder at
    batch 8, the strided convolutions' pads took 3.6 rather than 5.6 ms (docs/benchmarks.md)."""
    if not (left or right or top or bottom):
        return x
    n, c, h, w = x.shape
    layout = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
              else torch.contiguous_format)
    out = torch.empty((n, c, top + h + bottom, left + w + right), dtype=x.dtype, device=x.device,
                      memory_format=layout)
    out[:, :, top:top + h, left:left + w].copy_(x)
    for border in (out[:, :, :top], out[:, :, top + h:], out[:, :, top:top + h, :left],
                   out[:, :, top:top + h, left + w:]):
        border.zero_()
    return out


def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """Bias-free convolution with "same" padding: static when stride 1, TensorFlow's when strided."""
    if stride == 1:
        return nn.Conv2d(cin, cout, kernel, 1, kernel // 2, groups=groups, bias=False)
    return Conv2dSame(cin, cout, kernel, stride, 0, groups=groups, bias=False)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm then an activation (ReLU6 or none), as one module with BatchNorm's parameter names;
    ``drop`` and ``act`` are what ``Encoder.fold_batchnorm`` keeps when it folds the norm away."""

    def __init__(self, channels: int, act: bool) -> None:
        super().__init__(channels, eps=BN_EPS)
        self.drop = nn.Identity()
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(super().forward(x)))


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k, then pointwise 1x1 (no expansion); residual when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin, act=True)
        self.conv_pw = conv(cin, cout, 1)
        self.bn2 = BatchNormAct2d(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return out + x if self.has_skip else out


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expansion, depthwise k x k, 1x1 projection; residual when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.conv_pw = conv(cin, mid, 1)
        self.bn1 = BatchNormAct2d(mid, act=True)
        self.conv_dw = conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid, act=True)
        self.conv_pwl = conv(mid, cout, 1)
        self.bn3 = BatchNormAct2d(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))
        return out + x if self.has_skip else out


class EfficientNetLite0(nn.Module):
    """images (B, 3, S, S) -> ``forward_features``: (B, 1280, S/32, S/32); ``forward``: ImageNet logits."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv_stem = conv(3, STEM, 3, 2)
        self.bn1 = BatchNormAct2d(STEM, act=True)
        stages, cin, reduction = [], STEM, 2
        self.feature_info: list[dict] = []
        for index, (kind, repeats, kernel, stride, expansion, cout) in enumerate(LITE0_STAGES):
            blocks = []
            for r in range(repeats):
                s = stride if r == 0 else 1
                blocks.append(DepthwiseSeparableConv(cin, cout, kernel, s) if kind == "ds"
                              else InvertedResidual(cin, cout, kernel, s, expansion))
                cin = cout
            stages.append(nn.Sequential(*blocks))
            reduction *= stride
            last_of_reduction = index == len(LITE0_STAGES) - 1 or LITE0_STAGES[index + 1][3] == 2
            if last_of_reduction:  # timm lists the last stage at each stride
                self.feature_info.append({"stage": index + 1, "reduction": reduction, "module": f"blocks.{index}",
                                          "num_chs": cout})
        self.blocks = nn.Sequential(*stages)
        self.conv_head = conv(cin, HEAD, 1)
        self.bn2 = BatchNormAct2d(HEAD, act=True)
        self.num_features = HEAD
        self.classifier = nn.Linear(HEAD, num_classes)
        for module in self.modules():
            _init_like_tensorflow(module)

    def forward_intermediates(self, x: Tensor, indices: list[int], intermediates_only: bool = False):
        """-> (head features (B, 1280, S/32, S/32), [the output of ``feature_info[i]``'s stage for i in
        indices]); only that list with ``intermediates_only`` (which then stops at the last one)."""
        wanted = {self.feature_info[i]["stage"] for i in indices}
        x = self.bn1(self.conv_stem(x))
        intermediates = []
        for stage, blocks in enumerate(self.blocks, start=1):
            x = blocks(x)
            if stage in wanted:
                intermediates.append(x)
                if intermediates_only and len(intermediates) == len(wanted):
                    return intermediates
        return self.bn2(self.conv_head(x)), intermediates

    def forward_features(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.forward_features(x).mean(dim=(2, 3)))


def _init_like_tensorflow(m: nn.Module) -> None:
    """timm's (and TensorFlow's) EfficientNet initialisation, so a randomly initialised backbone
    (``encoder.weights=none``) has the scales timm's has (the same distributions, not the same draws)."""
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        bound = 1.0 / math.sqrt(m.weight.size(0))
        nn.init.uniform_(m.weight, -bound, bound)
        nn.init.zeros_(m.bias)
