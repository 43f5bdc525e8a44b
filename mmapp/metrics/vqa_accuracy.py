"""The official VQA accuracy (``vqaEval.py`` of GT-Vision-Lab/VQA, VQA v2 version).

For one question with N (normally 10) human answers, each answer is left out in turn and the
prediction scores ``min(1, #matches among the other N-1 / 3)``; the question's accuracy is the
mean over the N subsets. So 0, 1, 2, 3, >=4 agreeing humans out of 10 give 0, 0.3, 0.6, 0.9, 1.

Normalisation follows the official code exactly: newlines/tabs become spaces and the ends are
stripped for all answers; then *only when the human answers are not all identical* are the human
answers and the prediction punctuation-/digit-/article-normalised (``vqa_normalize``). When all
humans agree the prediction is compared raw (stripped), so "Yes" does not match ten "yes"
(the official annotations are already normalised, so this rarely matters with their answers).

All accuracies are fractions in 0..1 (the official tool prints x100 rounded to 2 decimals).
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Mapping, Sequence

from mmapp.errors import DataError
from mmapp.metrics.records import check_results
from mmapp.metrics.report import load_json
from mmapp.vqa_normalize import clean_whitespace, normalize_answer


def accuracy_for(pred: str, gt_answers: Sequence[str]) -> float:
    """Official VQA accuracy of one predicted answer against the N human answers, in 0..1."""
    if not gt_answers:
        raise ValueError("a question needs at least one human answer")
    gts = [clean_whitespace(a) for a in gt_answers]
    res = clean_whitespace(pred)
    if len(set(gts)) > 1:
        gts = [normalize_answer(a) for a in gts]
        res = normalize_answer(res)
    matches = [g == res for g in gts]
    total = sum(matches)
    # Leaving out answer i leaves (total - matches[i]) matching answers among the others.
    return sum(min(1.0, (total - m) / 3.0) for m in matches) / len(gts)


def _check_annotations(annotations_json: Any, name: str) -> dict[int, dict]:
    if not isinstance(annotations_json, Mapping) or not isinstance(annotations_json.get("annotations"), list):
        raise DataError(f"{name}: not a VQA annotations file (expected an object with an 'annotations' list)")
    by_id: dict[int, dict] = {}
    for i, ann in enumerate(annotations_json["annotations"]):
        where = f"{name}: annotations[{i}]"
        if not isinstance(ann, Mapping):
            raise DataError(f"{where} is not an object")
        for key in ("question_id", "answers", "question_type", "answer_type"):
            if key not in ann:
                raise DataError(f"{where} has no '{key}'")
        qid = ann["question_id"]
        answers = ann["answers"]
        if not isinstance(answers, list) or not answers:
            raise DataError(f"{where} (question_id {qid}) has no answers")
        if not all(isinstance(a, Mapping) and isinstance(a.get("answer"), str) for a in answers):
            raise DataError(f"{where} (question_id {qid}): every answer needs a string 'answer'")
        if qid in by_id:
            raise DataError(f"{where}: question_id {qid} appears twice")
        by_id[qid] = ann
    return by_id


def _check_questions(questions_json: Any, known: Mapping[int, Any], name: str) -> None:
    if not isinstance(questions_json, Mapping) or not isinstance(questions_json.get("questions"), list):
        raise DataError(f"{name}: not a VQA questions file (expected an object with a 'questions' list)")
    qids = set()
    for i, q in enumerate(questions_json["questions"]):
        if not isinstance(q, Mapping) or "question_id" not in q:
            raise DataError(f"{name}: questions[{i}] has no 'question_id'")
        qids.add(q["question_id"])
    unknown = [qid for qid in known if qid not in qids]
    if unknown:
        raise DataError(f"{name}: {len(unknown)} annotated question ids are not in the questions file "
                        f"(first: {unknown[0]}); do the questions and annotations files belong together?")


def vqa_accuracy(results: list[Mapping[str, Any]], questions_json: Mapping[str, Any] | None,
                 annotations_json: Mapping[str, Any], *, results_name: str = "results",
                 questions_name: str = "questions", annotations_name: str = "annotations",
                 max_missing_listed: int = 20) -> dict[str, Any]:
    """Score official-format VQA results against official annotations (and questions, if given).

    ``results``: ``[{"question_id": int, "answer": str}]``. Unknown or duplicate question ids raise
    DataError naming the record. Annotated questions without a result are not scored; they are
    counted in ``num_missing`` (and listed, up to ``max_missing_listed``).

    Returns ``{"overall", "per_answer_type", "per_question_type", "per_question",
    "num_questions", "num_evaluated", "num_missing", "missing_question_ids", "scale"}`` with
    accuracies as fractions in 0..1 (``overall`` is None when nothing was scored).
    """
    annotations = _check_annotations(annotations_json, annotations_name)
    if questions_json is not None:
        _check_questions(questions_json, annotations, questions_name)
    answers = check_results(results, annotations, results_name, "VQA", "question_id", "answer", "not in the annotations")

    per_question: dict[int, float] = {}
    by_answer_type: dict[str, list[float]] = defaultdict(list)
    by_question_type: dict[str, list[float]] = defaultdict(list)
    for qid, pred in answers.items():
        ann = annotations[qid]
        acc = accuracy_for(pred, [a["answer"] for a in ann["answers"]])
        per_question[qid] = acc
        by_answer_type[ann["answer_type"]].append(acc)
        by_question_type[ann["question_type"]].append(acc)

    missing = [qid for qid in annotations if qid not in answers]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {
        "overall": mean(list(per_question.values())) if per_question else None,
        "per_answer_type": {k: mean(v) for k, v in by_answer_type.items()},
        "per_question_type": {k: mean(v) for k, v in by_question_type.items()},
        "per_question": per_question,
        "num_questions": len(annotations),
        "num_evaluated": len(per_question),
        "num_missing": len(missing),
        "missing_question_ids": missing[:max_missing_listed],
        "scale": "fraction 0..1",
    }


def vqa_accuracy_files(results_path: str | os.PathLike, questions_path: str | os.PathLike | None,
                       annotations_path: str | os.PathLike) -> dict[str, Any]:
    """``vqa_accuracy`` on files; error messages name the file and record."""
    return vqa_accuracy(
        load_json(results_path, "VQA results file"),
        load_json(questions_path, "VQA questions file") if questions_path is not None else None,
        load_json(annotations_path, "VQA annotations file"),
        results_name=str(results_path), questions_name=str(questions_path),
        annotations_name=str(annotations_path),
    )
