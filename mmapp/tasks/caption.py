"""Caption training: COCO-format captions, the attention decoder, cross-entropy + attention
regulariser, validation by beam search scored with BLEU-4 and CIDEr-D."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmapp.checkpoint import save_model
from mmapp.data.caption_regions import CaptionRegions
from mmapp.data.coco_captions import CaptionDataset, CaptionEvalDataset, build_caption_vocab, load_caption_images
from mmapp.data.collate import collate_caption_eval, collate_captions
from mmapp.data.grouped import ByImage, collate_by_image
from mmapp.data.mentions import load_scene_objects, present_keys
from mmapp.distributed import DistInfo, gather
from mmapp.losses import attention_grounding_loss, attention_grounding_loss_terms, caption_loss, caption_loss_terms
from mmapp.metrics.caption_metrics import score_captions
from mmapp.models import imagenet_evidence
from mmapp.models.caption_decoder import build_caption_decoder
from mmapp.models.decoding import beam_search
from mmapp.run_config import RunConfig
from mmapp.speed.fixed_shapes import pad_caption_batch
from mmapp.tasks.common import EncodedHead, batched, encoder_and_inputs, ood_from_cache, shard
from mmapp.tasks.self_critical import CaptionReward, self_critical_loss
from mmapp.vocab import tokenize


class CaptionTask:
    metric = "CIDEr"

    def __init__(self, cfg: RunConfig, device: torch.device, info: DistInfo) -> None:
        d = cfg.data
        if not d.train_captions:
            raise ValueError("set data.train_captions (COCO captions json or Karpathy dataset_*.json)")
        self.cfg, self.device = cfg, device
        self.metric = cfg.train.metric or self.metric
        train_images = load_caption_images(d.train_captions, d.train_split)
        val_images = load_caption_images(d.val_captions or d.train_captions, d.val_split)
        if d.val_limit:
            val_images = val_images[: d.val_limit]
        self.vocab = build_caption_vocab(train_images, d.min_word_freq)
        cache, encoder, inputs = encoder_and_inputs(cfg)
        decoder_cfg = dataclasses.replace(cfg.decoder, vocab_size=len(self.vocab), encoder_dim=encoder.out_dim)
        words = self.vocab.words
        decoder_cfg, matches = imagenet_evidence.configure(decoder_cfg, words, encoder, imagenet_evidence.singulars(words))
        if matches is not None:  # a joined grid's class logits: on the head's own cells, then resized
            decoder_cfg = dataclasses.replace(decoder_cfg, imagenet_head_resize=encoder.head_resize())
        decoder = build_caption_decoder(decoder_cfg)
        imagenet_evidence.fill(decoder, matches, encoder)  # decoder.imagenet_weight: the classes that name a word
        self.model = EncodedHead(encoder, decoder)
        regions = None
        if cfg.train.grounding_weight > 0:  # word attention supervised by the named objects' boxes
            regions = CaptionRegions(d.train_instances, encoder.grid_size())
        self._items = CaptionDataset(train_images, self.vocab, max_len=d.max_caption_len, regions=regions,
                                     **inputs)
        self._train = ByImage(self._items)
        self._val = CaptionEvalDataset(val_images, **inputs)
        self._collate, self._collate_eval = collate_captions, collate_caption_eval
        self.ood_tensors, self.ood_meta = ood_from_cache(cache, self._items.handles, self._val.handles)
        self.dataset_name = Path(d.train_captions).name
        self.self_critical = False  # set per epoch by begin_epoch
        after = cfg.train.self_critical_after
        self.reward = _caption_reward(cfg, train_images) if 0 <= after < cfg.train.epochs else None

    def begin_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch (0-based): cross-entropy or self-critical."""
        after = self.cfg.train.self_critical_after
        self.self_critical = 0 <= after <= epoch

    def train_set(self) -> Any:
        return self._train

    def collate(self, groups: list) -> Any:
        return collate_by_image(groups, self._collate)

    def loss(self, model: nn.Module, batch: dict) -> tuple[Tensor, dict[str, float], int]:
        if self.self_critical:
            return self._self_critical_loss(model, batch)
        return self._loss(model, batch, caption_loss, attention_grounding_loss)

    def loss_terms(self, model: nn.Module, batch: dict) -> tuple[Tensor, dict[str, Tensor], int]:
        """The cross-entropy ``loss`` with its terms left on the device (the fast path's steps)."""
        return self._loss(model, batch, caption_loss_terms, attention_grounding_loss_terms)

    def _loss(self, model: nn.Module, batch: dict, caption_fn: Any, ground_fn: Any) -> tuple[Tensor, dict, int]:
        captions = batch["captions"]  # (B, T + 1): <start> w1 .. wn <end> <pad>..
        logits, alphas = model(batch["visual"], captions[:, :-1], batch["image_index"])  # (B, T, V), (B, T, P)
        loss, stats = caption_fn(logits, alphas, captions[:, 1:], self.vocab.pad_id, self.cfg.train.attention_weight)
        if "regions" in batch:
            ground, ground_stats = ground_fn(alphas, batch["regions"])
            loss = loss + self.cfg.train.grounding_weight * ground
            stats.update(ground_stats)
        return loss, stats, captions.shape[0]

    def fixed_batch(self, batch: dict) -> tuple[dict[str, Tensor], int]:
        """A collated batch padded to the fast path's fixed shapes, and its real caption count."""
        t = self.cfg.train
        return pad_caption_batch(batch, t.batch_size, t.row_bucket, t.length_bucket, self.cfg.data.max_caption_len + 2,
                                 self.vocab.pad_id), batch["captions"].shape[0]

    def _self_critical_loss(self, model: nn.Module, batch: dict) -> tuple[Tensor, dict[str, float], int]:
        visual = batch["visual"]  # (I, ...) one row per image
        # each image's id, from its captions' ids (image_index maps caption -> image row)
        image_ids = torch.zeros(visual.shape[0], dtype=torch.long).index_copy_(
            0, batch["image_index"].cpu(), batch["image_ids"].cpu()).tolist()
        loss, stats = self_critical_loss(model.head, model.features(visual), image_ids, self.reward, self.vocab,
                                         self.cfg.train.scst_samples, self.cfg.data.max_caption_len)
        return loss, stats, len(image_ids) * self.cfg.train.scst_samples

    @torch.no_grad()
    def decode(self, model: EncodedHead, indices: list[int], beam_size: int) -> dict[int, str]:
        model.eval()
        out: dict[int, str] = {}
        for batch in batched(self._val, indices, 64, self._collate_eval):
            features = model.features(batch["visual"].to(self.device))
            decoded = beam_search(model.head, features, beam_size, self.cfg.data.max_caption_len,
                                  self.vocab.start_id, self.vocab.end_id, self.vocab.pad_id)
            for image_id, tokens in zip(batch["image_ids"].tolist(), decoded.tokens.tolist()):
                out[image_id] = " ".join(self.vocab.decode(tokens))
        return out

    def validate(self, model: nn.Module, info: DistInfo) -> dict[str, float]:
        indices = shard(list(range(len(self._val))), info.rank, info.world_size)
        captions: dict[int, str] = {}
        for part in gather(self.decode(model, indices, self.cfg.train.val_beam_size), info):
            captions.update(part)
        scores = score_captions(self._val.references(), captions, with_meteor=False).overall
        return {k: float(v) for k, v in scores.items() if k in ("Bleu_4", "CIDEr", "ROUGE_L", "Bleu_1")}

    def save(self, path: Path, model: EncodedHead, training: dict, extra_tensors: dict, extra_meta: dict) -> None:
        training = {**training, "task": "caption", "dataset": self.dataset_name,
                    "max_caption_len": self.cfg.data.max_caption_len}
        save_model(path, "captioner", model.head, model.encoder, self.vocab, None, training,
                   {**extra_tensors, **self.ood_tensors}, {**extra_meta, **self.ood_meta})


def _caption_reward(cfg: RunConfig, train_images: list) -> Any:
    """The self-critical reward: CIDEr-D against the training references (tokenised as the
    vocabulary is), minus the hallucination penalty when ``train.scst_hallucination_weight`` > 0."""
    references = {im.image_id: [tokenize(c) for c in im.captions] for im in train_images}
    if cfg.train.scst_hallucination_weight <= 0:
        return CaptionReward(references)
    lexicon, objects, _ = load_scene_objects(cfg.data.train_instances)
    return CaptionReward(references, present_keys(objects), lexicon.chair_keys, cfg.train.scst_hallucination_weight)
