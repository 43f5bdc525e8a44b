"""VQA v2 as a torch Dataset, from the official files.

- ``v2_OpenEnded_mscoco_<subtype>_questions.json``: ``questions`` [{question_id, image_id,
  question}], plus ``data_subtype`` (e.g. "train2014").
- ``v2_mscoco_<subtype>_annotations.json``: ``annotations`` [{question_id, image_id,
  multiple_choice_answer, answers [{answer, answer_confidence, answer_id}] (10 each),
  answer_type, question_type}]. Absent for test splits.

Answer vocabulary (``build_answer_vocab``): by default the top-K normalised answers counted over
*all* human answers (each question contributes its 10 answers), as most open-source VQA models do;
``count="mc"`` counts only each question's ``multiple_choice_answer``. Training target of a
question: for every vocabulary answer, ``soft_score(#humans who gave it, after normalize_answer)``
= min(count / 3, 1); answers outside the vocabulary are dropped.

Images are found by, in order: an ``image_files`` mapping ``{image_id: relative file}`` (or a
COCO-format json with an ``images`` list, e.g. our shapes ``captions_<split>.json``), else the
official COCO naming ``COCO_<subtype>_<12-digit id>.jpg`` directly under the images root or in
``<root>/<subtype>/``. With a feature cache, the image id is the lookup key.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmapp.config import EncoderConfig
from mmapp.data.coco_captions import image_files_from_json
from mmapp.data.collate import Ragged
from mmapp.data.feature_cache import FeatureCache, VisualSource
from mmapp.data.fields import field, has_word, read_json, top_list
from mmapp.errors import DataError
from mmapp.vocab import AnswerVocab, Vocab, tokenize
from mmapp.vqa_normalize import normalize_answer, soft_score


@dataclass(frozen=True)
class VQAQuestion:
    """One question with its human answers (raw strings; empty without annotations)."""

    question_id: int
    image_id: int
    question: str
    answers: tuple[str, ...] = ()
    multiple_choice_answer: str = ""
    answer_type: str = ""
    question_type: str = ""
    object_ids: tuple[int, ...] = ()  # instance ids of the objects it is about (shapes annotations)


@dataclass(frozen=True)
class VQASplit:
    """The questions of one questions file (and its annotations file, if any)."""

    questions: tuple[VQAQuestion, ...]
    data_subtype: str  # e.g. "train2014"; "" if the file does not say
    source: str  # the questions file, for error messages
    has_answers: bool


def coco_image_file(image_id: int, subtype: str) -> str:
    """Official COCO file name: ``COCO_train2014_000000000009.jpg``."""
    return f"COCO_{subtype}_{image_id:012d}.jpg"


def _load_annotations(path: str | Path) -> dict[int, dict[str, Any]]:
    anns = top_list(read_json(path), "annotations", path)
    out: dict[int, dict[str, Any]] = {}
    for i, ann in enumerate(anns):
        qid = field(ann, "question_id", int, path, f"annotation #{i}")
        where = f"annotation #{i} (question_id {qid})"
        field(ann, "image_id", int, path, where)
        answers = field(ann, "answers", list, path, where)
        if not answers:
            raise DataError(f"{path}: {where}: no answers (needs at least 1)")
        for j, a in enumerate(answers):
            field(a, "answer", str, path, f"{where} answer #{j}")
        for key in ("multiple_choice_answer", "answer_type", "question_type"):
            if key in ann:
                field(ann, key, str, path, where)
        if "object_ids" in ann:
            ids = field(ann, "object_ids", list, path, where)
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise DataError(f"{path}: {where}: 'object_ids' must be a list of integers, got {ids!r:.60}")
        if qid in out:
            raise DataError(f"{path}: {where}: duplicate question_id {qid}")
        out[qid] = ann
    return out


def load_vqa(questions_path: str | Path, annotations_path: str | Path | None = None) -> VQASplit:
    """Questions (file order) joined with their annotations. Every question needs exactly one
    annotation with the same image id, and every annotation a question, else ``DataError``."""
    data = read_json(questions_path)
    raw_questions = top_list(data, "questions", questions_path)
    subtype = data.get("data_subtype", "")
    if not isinstance(subtype, str):
        raise DataError(f"{questions_path}: 'data_subtype' must be a string, got {subtype!r:.40}")
    anns = _load_annotations(annotations_path) if annotations_path is not None else None
    out, seen = [], set()
    for i, q in enumerate(raw_questions):
        qid = field(q, "question_id", int, questions_path, f"question #{i}")
        where = f"question #{i} (question_id {qid})"
        image_id = field(q, "image_id", int, questions_path, where)
        text = field(q, "question", str, questions_path, where)
        if qid in seen:
            raise DataError(f"{questions_path}: {where}: duplicate question_id {qid}")
        seen.add(qid)
        if not text.strip():
            raise DataError(f"{questions_path}: {where}: empty question")
        if anns is None:
            out.append(VQAQuestion(qid, image_id, text.strip()))
            continue
        ann = anns.get(qid)
        if ann is None:
            raise DataError(f"{questions_path}: {where}: no annotation in {annotations_path}")
        if ann["image_id"] != image_id:
            raise DataError(f"{annotations_path}: annotation of question_id {qid}: image_id {ann['image_id']} "
                            f"differs from {image_id} in {questions_path}")
        out.append(VQAQuestion(qid, image_id, text.strip(), tuple(a["answer"] for a in ann["answers"]),
                               ann.get("multiple_choice_answer", ""), ann.get("answer_type", ""),
                               ann.get("question_type", ""), tuple(ann.get("object_ids", ()))))
    if anns is not None and len(anns) != len(seen):
        extra = next(q for q in anns if q not in seen)
        raise DataError(f"{annotations_path}: annotation of question_id {extra} has no question in {questions_path}")
    return VQASplit(tuple(out), subtype, str(questions_path), anns is not None)


def build_question_vocab(questions: Iterable[VQAQuestion], min_freq: int = 1,
                         max_size: int | None = None) -> Vocab:
    """Word vocabulary of the (training) questions."""
    return Vocab.build((q.question for q in questions), min_freq=min_freq, max_size=max_size)


def build_answer_vocab(questions: Iterable[VQAQuestion], top_k: int = 3000, count: str = "all") -> AnswerVocab:
    """The ``top_k`` most frequent normalised answers (ties alphabetical), counted over all human
    answers (``count="all"``) or over the multiple-choice answers (``count="mc"``)."""
    if count not in ("all", "mc"):
        raise ValueError(f"count must be 'all' or 'mc', got {count!r}")
    norm = _Normalizer()
    if count == "all":
        answers = (norm(a) for q in questions for a in q.answers)
    else:
        answers = (norm(q.multiple_choice_answer) for q in questions if q.multiple_choice_answer)
    return AnswerVocab.build((a for a in answers if a), top_k)


class _Normalizer:
    """``normalize_answer`` with a memo: VQA's millions of answers are mostly repeats."""

    def __init__(self) -> None:
        self.memo: dict[str, str] = {}

    def __call__(self, answer: str) -> str:
        out = self.memo.get(answer)
        if out is None:
            out = self.memo[answer] = normalize_answer(answer)
        return out


def soft_targets(answers: Sequence[str], vocab: AnswerVocab, normalize=normalize_answer) -> dict[int, float]:
    """``{answer index: min(#humans / 3, 1)}`` over the vocabulary answers given by the humans."""
    counts = Counter(normalize(a) for a in answers)
    return {idx: soft_score(n) for a, n in counts.items() if (idx := vocab.index(a)) is not None}


def build_answer_words(questions: Iterable[VQAQuestion]) -> Vocab:
    """The generative head's vocabulary: every word of the normalised training answers (min count 1)."""
    norm = _Normalizer()
    return Vocab.build(norm(a) for q in questions for a in q.answers)


def answer_mentions(answers: Sequence[str], vocab: Vocab) -> list[list[int]]:
    """``vqa.copy_mentions``: each answer's words as ids of the question vocabulary ``vocab``; [] for
    an answer with a word no training question uses (it can never be mentioned)."""
    out = []
    for answer in answers:
        words = tokenize(answer)
        out.append([vocab.id(w) for w in words] if words and all(w in vocab for w in words) else [])
    return out


def answer_sequences(answers: Sequence[str], words: Vocab, normalize=normalize_answer
                     ) -> tuple[list[list[int]], list[float]]:
    """Each distinct normalised answer as ``<start> w.. <end>`` ids, and its weight: the official soft
    score min(1, #humans / 3), normalised to sum to 1 over the question's answers."""
    counts = Counter(a for a in (normalize(a) for a in answers) if a and has_word(a))
    scores = {a: soft_score(n) for a, n in counts.items()}
    total = sum(scores.values())
    return [words.encode(a) for a in scores], [s / total for s in scores.values()]


class VQADataset(Dataset):
    """One item per question.

    Item: ``visual`` (P, D) float32 cached features (``features=``) or (3, S, S) preprocessed image
    (``images_root=`` + ``encoder_cfg=``), ``question`` (L,) long ids (``Vocab.encode_question``, at
    most ``max_question_len`` words), ``target`` (N,) float32 soft scores, ``question_id``,
    ``image_id``, ``answers`` (the raw human answers, for evaluation), and with ``regions`` (questions, G, P)
    bool (``vqa_regions.glimpse_regions``) ``regions`` (G, P), the cells each glimpse should attend,
    and with ``centres`` (questions, P) bool ``centres`` (P,), the cells of its objects' centres; with
    ``answer_words`` (``build_answer_words``) ``answer_seqs`` / ``answer_weights`` (``answer_sequences``).
    Every image is checked up front.
    """

    def __init__(self, split: VQASplit, vocab: Vocab, answers: AnswerVocab, *,
                 features: FeatureCache | None = None, images_root: str | Path | None = None,
                 encoder_cfg: EncoderConfig | None = None,
                 image_files: Mapping[int, str] | str | Path | None = None,
                 max_question_len: int | None = None, regions: np.ndarray | None = None,
                 centres: np.ndarray | None = None, answer_words: Vocab | None = None) -> None:
        for name, rows in (("regions", regions), ("centres", centres)):
            if rows is not None and len(rows) != len(split.questions):
                raise ValueError(f"{name} has {len(rows)} rows for {len(split.questions)} questions")
        self.split, self.answer_vocab, self.regions, self.centres = split, answers, regions, centres
        self.visual = VisualSource(features, images_root, encoder_cfg)
        if isinstance(image_files, (str, Path)):
            image_files = image_files_from_json(image_files)
        files_by_id = {}
        for q in split.questions:
            if q.image_id in files_by_id:
                continue
            if image_files is not None:
                if q.image_id not in image_files:
                    raise DataError(f"{split.source}: image_id {q.image_id} (question_id {q.question_id}) "
                                    "is not in the image file list")
                files_by_id[q.image_id] = [image_files[q.image_id]]
            elif split.data_subtype:
                name = coco_image_file(q.image_id, split.data_subtype)
                files_by_id[q.image_id] = [name, f"{split.data_subtype}/{name}"]
            else:
                files_by_id[q.image_id] = [str(q.image_id)]  # a cache keyed by image id still works
        image_ids = list(files_by_id)
        try:
            handles = self.visual.resolve_all([(i, files_by_id[i], split.source) for i in image_ids])
        except DataError as e:
            if image_files is None:  # the official naming was guessed: say how to name files otherwise
                raise DataError(f"{e}; if the images are not named COCO_<subtype>_<id>.jpg, give "
                                "image_files= (e.g. the split's captions json)") from None
            raise
        self.handles = dict(zip(image_ids, handles))
        self.vocab, self.max_question_len = vocab, max_question_len
        norm = _Normalizer()
        target_idx, target_score = [], []
        for q in split.questions:
            if not has_word(q.question):  # ids are made in __getitem__ (tokenising all is slow)
                raise DataError(f"{split.source}: question_id {q.question_id}: no words in {q.question!r}")
            t = soft_targets(q.answers, answers, norm)
            target_idx.append(list(t))
            target_score.append(list(t.values()))
        self.target_idx, self.target_score = Ragged(target_idx), Ragged(target_score, np.float32)
        self.answer_words = answer_words
        if answer_words is not None:  # the generative head's targets: every distinct answer, soft-weighted
            self.answer_seqs = [answer_sequences(q.answers, answer_words, norm) for q in split.questions]

    def __len__(self) -> int:
        return len(self.split.questions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"visual": self.visual_of(index), **self.fields(index)}

    def visual_of(self, index: int) -> Tensor:
        return self.visual.load(self.handles[self.split.questions[index].image_id])

    def item_images(self) -> np.ndarray:
        """(num items,) the image id each question is about (for ``grouped.ByImage``)."""
        return np.fromiter((q.image_id for q in self.split.questions), dtype=np.int64,
                           count=len(self.split.questions))

    def fields(self, index: int) -> dict[str, Any]:
        """The item without its visual input."""
        q = self.split.questions[index]
        target = torch.zeros(len(self.answer_vocab), dtype=torch.float32)  # (N,)
        target[torch.from_numpy(self.target_idx[index])] = torch.from_numpy(self.target_score[index])
        out = {"question": torch.tensor(self.vocab.encode_question(q.question, self.max_question_len)),  # (L,)
               "target": target, "question_id": q.question_id, "image_id": q.image_id,
               "answers": list(q.answers)}
        if self.answer_words is not None:
            out["answer_seqs"], out["answer_weights"] = self.answer_seqs[index]
        if self.regions is not None:
            out["regions"] = torch.from_numpy(self.regions[index])  # (G, P) bool
        if self.centres is not None:
            out["centres"] = torch.from_numpy(self.centres[index])  # (P,) bool
        return out
