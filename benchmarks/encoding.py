"""Image-side benchmarks: the encoder by batch size (and what helps it), feature extraction, and the
end-to-end caption of one PIL image (decode, preprocess, encoder at 224, beam search of 3).

The encoder is EfficientNet-Lite0 with its packaged ImageNet weights. mmapp's default inference path
(``Encoder.feature_maps`` under ``inference_mode``) feeds channels-last images in chunks of
``encoder.inference_chunk``; the "plain" rows call the backbone the straightforward way (contiguous
images, the whole batch at once) for comparison.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks.common import Figure, Sizes, against, median, timed

GROUP_ENC, GROUP_FEAT, GROUP_E2E = "encoder", "feature extraction", "end-to-end caption"
# The figures for EfficientNet-Lite0 at 224 on this machine (2 threads), before any tuning.
QUOTED_MS = {1: 19.0, 32: 28.0}


def photos(n: int, size: tuple[int, int] = (640, 480)) -> list[Image.Image]:
    """n COCO-sized RGB photos: scikit-image's bundled ones, resized and shifted so no two are equal."""
    from skimage import data

    sources = [Image.fromarray(getattr(data, name)()).convert("RGB")
               for name in ("astronaut", "coffee", "chelsea", "rocket")]
    out = []
    for i in range(n):
        img = sources[i % len(sources)]
        w, h = img.size
        dx, dy = (i * 7) % max(1, w // 10), (i * 5) % max(1, h // 10)
        out.append(img.crop((dx, dy, w - (i % 3) * 3, h)).resize(size, Image.BICUBIC))
    return out


def write_jpegs(images: list[Image.Image], folder: Path) -> list[Path]:
    paths = []
    for i, img in enumerate(images):
        path = folder / f"{i:06d}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


def _encoder(grid: str = "last"):
    from mmapp.config import EncoderConfig
    from mmapp.models.encoder import build_encoder

    return build_encoder(EncoderConfig(grid=grid)).eval()


def encoder_by_batch(sizes: Sizes) -> list[Figure]:
    """ms per image by batch size: mmapp's path, the plain path, chunk sizes and thread counts."""
    encoder = _encoder()
    batch = torch.randn(max(sizes.encoder_batches), 3, 224, 224, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()

    def per_image(fn, b: int) -> tuple[float, list[float]]:
        with torch.inference_mode():
            times = timed(lambda: fn(batch[:b]), max(3, sizes.repeats * (8 if b == 1 else 1)))
        return median(times) / b * 1e3, times

    figures, ours = [], {}
    for b in sizes.encoder_batches:
        ours[b], times = per_image(encoder, b)
        plain, plain_times = per_image(encoder._maps, b)
        quoted = QUOTED_MS.get(b)
        figures.append(Figure(GROUP_ENC, f"mmapp encoder, batch {b}", ours[b], "ms/image", False,
                              f"plain path (same run){'; issue: %.0f ms' % quoted if quoted else ''}",
                              against(ours[b], plain, False), None, f"plain {plain:.1f} ms/image", times))
    smallest, largest = min(sizes.encoder_batches), max(sizes.encoder_batches)
    figures.append(Figure(GROUP_ENC, f"per-image cost, batch {largest} vs batch {smallest}", ours[largest],
                          "ms/image", False, f"batch {smallest} (same run)",
                          against(ours[largest], ours[smallest], False), 1.0,
                          "target: no worse per image than batch 1"))
    chunk_before = encoder.inference_chunk
    for chunk in (1, 2, 8, largest):
        if chunk == chunk_before:
            continue
        encoder.inference_chunk = chunk
        ms, times = per_image(encoder, largest)
        figures.append(Figure(GROUP_ENC, f"batch {largest} in chunks of {chunk}", ms, "ms/image", False,
                              f"chunks of {chunk_before} (mmapp)", against(ms, ours[largest], False), None,
                              "information", times))
    encoder.inference_chunk = chunk_before
    for n in sorted({1, threads} - {threads}):
        torch.set_num_threads(n)
        try:
            for b in (smallest, largest):
                ms, times = per_image(encoder, b)
                figures.append(Figure(GROUP_ENC, f"batch {b} with {n} thread(s)", ms, "ms/image", False,
                                      f"{threads} threads (same run)", against(ms, ours[b], False), None,
                                      "information", times))
        finally:
            torch.set_num_threads(threads)
    return figures


def feature_extraction(sizes: Sizes, raw_ms_per_image: float | None) -> list[Figure]:
    """images/s of ``extract_features`` over COCO-sized JPEGs (decode, resize, encode, write fp16)."""
    from mmapp.data.feature_extraction import extract_features

    encoder = _encoder()
    with tempfile.TemporaryDirectory(prefix="mmapp-bench-") as tmp:
        folder = Path(tmp)
        paths = write_jpegs(photos(sizes.feature_images), folder)
        keys = [p.name for p in paths]
        rates = []
        for repeat in range(max(2, sizes.repeats - 1)):
            cache = extract_features(paths, keys, encoder, folder / f"cache{repeat}", batch_size=32,
                                     num_workers=2, progress=False)
            rates.append(float(cache.run_stats["images_per_second"]))
    rate = median(rates)
    raw = 1e3 / raw_ms_per_image if raw_ms_per_image else None
    return [Figure(GROUP_FEAT, f"extract_features, {sizes.feature_images} JPEGs 640x480, batch 32, 2 workers", rate,
                   "images/s", True, "encoder alone at batch 32 (same run)" if raw else "",
                   against(rate, raw, True) if raw else None, None,
                   f"encoder alone {raw:.0f} images/s" if raw else "", rates)]


def end_to_end(sizes: Sizes, captioner_path: Path, label: str, target_ms: float) -> list[Figure]:
    """Median ms of ``Captioner.caption(pil_image, beam_size=3)`` over COCO-sized photos: image checks,
    resize, encoder at 224, beam search of ``sizes.steps`` decoder steps (``sizes.steps - 1`` words
    and ``<end>``; random weights use them all), words and attention maps out."""
    from mmapp.inference import Captioner

    captioner = Captioner.from_checkpoint(captioner_path, device="cpu")
    images = photos(8)
    max_len = sizes.steps - 1
    captioner.caption(images[0], beam_size=3, max_len=max_len)
    times = []
    for _ in range(max(3, sizes.repeats * 4)):
        for img in images:
            start = time.perf_counter()
            captioner.caption(img, beam_size=3, max_len=max_len)
            times.append(time.perf_counter() - start)
    ms = median(times) * 1e3
    with torch.inference_mode():
        from mmapp.images import preprocess

        x = torch.stack([preprocess(images[0], captioner.encoder.cfg)])
        enc_ms = median(timed(lambda: captioner.encoder(x), 10)) * 1e3
    return [Figure(GROUP_E2E, f"PIL image -> caption, beam 3, <= {sizes.steps} steps ({label})", ms, "ms", False,
                   f"target {target_ms:.0f} ms",
                   against(ms, target_ms, False), 1.0, f"encoder alone {enc_ms:.1f} ms; grid {captioner.grid}", times)]


def tutorial_size_captioner(folder: Path, sizes: Sizes) -> Path:
    """A captioner checkpoint with the issue's decoder dimensions (random weights, 10,000 words) over
    EfficientNet-Lite0's 7x7x1280 grid at 224. Its <end> is never chosen (see ``captioning``)."""
    from benchmarks.captioning import reference_decoder
    from benchmarks.reference import to_mmapp
    from mmapp.checkpoint import save_model
    from mmapp.vocab import SPECIALS, Vocab

    encoder = _encoder("last")
    decoder = to_mmapp(reference_decoder(sizes)).eval()
    vocab = Vocab(SPECIALS + tuple(f"word{i}" for i in range(sizes.vocab - len(SPECIALS))))
    return save_model(folder / "captioner_tutorial_size.safetensors", "captioner", decoder, encoder, vocab,
                      training={"dataset": "random weights (benchmark)"})

