"""VQA training: VQA v2-format questions and annotations, the question-attention model, soft-target
cross-entropy, validation by the official VQA accuracy. With ``vqa.head: generate`` the loss and the
answers are ``tasks/vqa_generate.py``'s (answers written word by word)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmapp.checkpoint import save_model
from mmapp.data.coco_captions import image_files_from_json
from mmapp.data.collate import collate_vqa, collate_vqa_answers
from mmapp.data.grouped import ByImage, collate_by_image
from mmapp.data.vqa_regions import glimpse_regions
from mmapp.data.vqa_v2 import (VQADataset, answer_mentions, build_answer_vocab, build_answer_words,
                               build_question_vocab, load_vqa)
from mmapp.distributed import DistInfo, gather
from mmapp.losses import attention_grounding_loss_terms, count_map_loss_terms, floats, vqa_loss_terms
from mmapp.metrics.vqa_accuracy import accuracy_for
from mmapp.models.answer_decoder import build_vqa_net
from mmapp.models import imagenet_evidence
from mmapp.run_config import RunConfig
from mmapp.speed.fixed_shapes import pad_vqa_batch
from mmapp.tasks.common import EncodedHead, batched, encoder_and_inputs, ood_from_cache, shard
from mmapp.tasks.vqa_generate import generated_answers, generation_loss


class VQATask:
    metric = "accuracy"

    def __init__(self, cfg: RunConfig, device: torch.device, info: DistInfo) -> None:
        d = cfg.data
        if not (d.train_questions and d.train_annotations and d.val_questions and d.val_annotations):
            raise ValueError("set data.train_questions, data.train_annotations, data.val_questions and "
                             "data.val_annotations (VQA v2 json files)")
        self.cfg, self.device = cfg, device
        self.metric = cfg.train.metric or self.metric
        train = load_vqa(d.train_questions, d.train_annotations)
        val = load_vqa(d.val_questions, d.val_annotations)
        if d.val_limit:
            val = dataclasses.replace(val, questions=val.questions[: d.val_limit])
        self.vocab = build_question_vocab(train.questions, min_freq=1)
        self.answers = build_answer_vocab(train.questions, d.top_answers)
        self.generate = cfg.vqa.head == "generate"
        self.answer_words = build_answer_words(train.questions) if self.generate else None
        cache, encoder, inputs = encoder_and_inputs(cfg)
        index = None
        if d.image_index:  # one or more COCO-format files listing file_name per image id
            index = {}
            for path in d.image_index.split(","):
                index.update(image_files_from_json(path.strip()))
        net_cfg = dataclasses.replace(cfg.vqa, vocab_size=len(self.vocab), num_answers=len(self.answers),
                                      encoder_dim=encoder.out_dim,
                                      answer_vocab_size=len(self.answer_words) if self.generate else 0)
        net_cfg, matches = imagenet_evidence.configure(net_cfg, self.answers.answers, encoder)
        mention_ids = answer_mentions(self.answers.answers, self.vocab) if net_cfg.copy_mentions else None
        if mention_ids is not None:
            net_cfg = dataclasses.replace(net_cfg, mention_words=max(map(len, mention_ids), default=1))
        net = build_vqa_net(net_cfg)
        imagenet_evidence.fill(net, matches, encoder)  # vqa.imagenet_weight: the classes that name an answer
        if mention_ids is not None:
            net.fill_mentions(mention_ids)
        self.model = EncodedHead(encoder, net)
        kwargs = dict(max_question_len=d.max_question_len, image_files=index, **inputs)
        regions = centres = None
        if cfg.train.grounding_weight > 0:  # attention supervised by the referred objects' boxes
            regions, centres = glimpse_regions(train.questions, d.train_instances, encoder.grid_size(),
                                               net_cfg.glimpses)
            if not regions.any():
                raise ValueError(f"train.grounding_weight: no question in {d.train_annotations} has "
                                 "'object_ids' to supervise the attention with")
        self._items = VQADataset(train, self.vocab, self.answers, regions=regions,
                                 centres=centres if net_cfg.count_map else None, answer_words=self.answer_words,
                                 **kwargs)
        self._train = ByImage(self._items)
        self._val = VQADataset(val, self.vocab, self.answers, **kwargs)
        self._collate = collate_vqa
        self._train_collate = collate_vqa_answers if self.generate else collate_vqa
        self.ood_tensors, self.ood_meta = ood_from_cache(cache, self._items.handles.values(),
                                                        self._val.handles.values())
        self.dataset_name = Path(d.train_questions).name

    def train_set(self) -> Any:
        return self._train

    def collate(self, groups: list) -> Any:
        return collate_by_image(groups, self._train_collate)

    def loss(self, model: nn.Module, batch: dict) -> tuple[Tensor, dict[str, float], int]:
        loss, terms, count = self.loss_terms(model, batch)
        return loss, floats(terms), count

    def loss_terms(self, model: nn.Module, batch: dict) -> tuple[Tensor, dict[str, Tensor], int]:
        """``loss`` with its terms left on the device (the fast path's steps; ``rows`` (B,) in a padded
        batch names its real questions)."""
        if self.generate:
            loss, stats, attention, count_map = generation_loss(model, batch)  # attention (B, G, P)
        else:
            logits, attention, count_map = model(batch["visual"], batch["questions"], batch["lengths"],
                                                 batch["image_index"], True)  # (B, N), (B, G, P), (B, P)
            loss, stats = vqa_loss_terms(logits, batch["targets"])
        if "regions" in batch:
            ground, ground_stats = attention_grounding_loss_terms(attention, batch["regions"])
            loss = loss + self.cfg.train.grounding_weight * ground
            stats.update(ground_stats)
        if "centres" in batch:
            centres, centre_stats = count_map_loss_terms(count_map, batch["centres"], batch.get("rows"))
            loss = loss + self.cfg.train.grounding_weight * centres
            stats.update(centre_stats)
        return loss, stats, batch["questions"].shape[0]

    def fixed_batch(self, batch: dict) -> tuple[dict[str, Tensor], int]:
        """A collated batch padded to the fast path's fixed shapes, and its real question count."""
        t = self.cfg.train
        return (pad_vqa_batch(batch, t.batch_size, t.row_bucket, t.length_bucket, self.cfg.data.max_question_len),
                batch["questions"].shape[0])

    @torch.no_grad()
    def predict(self, model: EncodedHead, indices: list[int]) -> list[tuple[int, str, float, str]]:
        """(question_id, predicted answer, VQA accuracy, question type) for the given val items."""
        model.eval()
        qtype = {q.question_id: q.question_type for q in self._val.split.questions}
        out = []
        for batch in batched(self._val, indices, 256, self._collate):
            visual, questions = batch["visual"].to(self.device), batch["questions"].to(self.device)
            if self.generate:
                preds = generated_answers(model, visual, questions, batch["lengths"], self.answer_words)
            else:
                logits, _ = model(visual, questions, batch["lengths"])
                preds = [self.answers.answers[i] for i in logits.argmax(-1).tolist()]
            for qid, pred, answers in zip(batch["question_ids"].tolist(), preds, batch["answers"]):
                out.append((qid, pred, accuracy_for(pred, answers), qtype[qid]))
        return out

    def validate(self, model: nn.Module, info: DistInfo) -> dict[str, float]:
        indices = shard(list(range(len(self._val))), info.rank, info.world_size)
        rows = [r for part in gather(self.predict(model, indices), info) for r in part]
        by_type: dict[str, list[float]] = defaultdict(list)
        for _, _, acc, qtype in rows:
            by_type[qtype].append(acc)
        out = {"accuracy": sum(r[2] for r in rows) / max(len(rows), 1)}
        out.update({f"acc_{t}": sum(v) / len(v) for t, v in sorted(by_type.items()) if t})
        return out

    def save(self, path: Path, model: EncodedHead, training: dict, extra_tensors: dict, extra_meta: dict) -> None:
        training = {**training, "task": "vqa", "dataset": self.dataset_name,
                    "max_question_len": self.cfg.data.max_question_len}
        answers = self.answer_words if self.generate else self.answers  # generate: the answer words
        save_model(path, "vqa", model.head, model.encoder, self.vocab, answers, training,
                   {**extra_tensors, **self.ood_tensors}, {**extra_meta, **self.ood_meta})
