"""COCO caption metrics with ``pycocoevalcap``'s own scorers, as ``COCOEvalCap.evaluate`` runs them
(PTB tokenisation, then BLEU-1..4, METEOR, ROUGE-L, CIDEr-D), without SPICE.

Differences from ``COCOEvalCap``, none of which changes a score:
- The Stanford PTB tokenizer jar is run with the toolkit's exact command and punctuation filter,
  but its input file lives in a private temp folder (the toolkit writes it into its own package
  folder, which may be read-only or shared between concurrent runs). All captions go through one
  Java call (``-preserveLines`` tokenises line by line, so this equals two calls). Line breaks
  inside a caption (``\\r``, U+2028, ...) become spaces so the tokenizer's lines stay aligned.
- SPICE is reported as unavailable: it downloads Stanford CoreNLP models on first use, which
  cannot be done offline. ``COCOEvalCap.evaluate`` would fail as a whole.
- Without ``java`` on PATH, METEOR is reported unavailable and tokenisation falls back to NLTK's
  Treebank tokenizer with the same lower-casing and punctuation filter: close to, but not
  guaranteed identical to, the official numbers; the result says so.

Scores are fractions (BLEU, METEOR, ROUGE-L in 0..1; CIDEr-D is unbounded, about 0..10).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

from mmapp.errors import DataError
from mmapp.metrics.records import check_results
from mmapp.metrics.report import load_json

SPICE_UNAVAILABLE = ("SPICE needs Stanford CoreNLP 3.6.0 models that it downloads at first use; "
                     "they cannot be fetched offline")
NO_JAVA_METEOR = "java is not on PATH: METEOR 1.5 is a Java program"
NO_JAVA_TOKENIZER = ("python fallback (NLTK Treebank, lower-cased, PTB punctuation removed): java is not on "
                     "PATH, so scores approximate the official PTB-tokenised ones")
PTB_TOKENIZER = "Stanford PTBTokenizer (CoreNLP 3.4.1), as COCOEvalCap"
# Characters the Java tokenizer treats as line ends; the toolkit only replaces "\n".
_LINE_BREAKS = ("\r", "\u2028", "\u2029", "\x85", "\x0b", "\x0c")


@dataclass(frozen=True)
class CaptionScores:
    """``overall``: metric -> score, or ``{"available": False, "reason": ...}``;
    ``per_image``: image id -> metric -> score (the metrics that ran)."""

    overall: dict[str, Any]
    per_image: dict[Hashable, dict[str, float]]
    tokenizer: str
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall, "per_image": self.per_image, "num_images": len(self.per_image),
                "tokenizer": self.tokenizer, "notes": list(self.notes)}


def find_java() -> str | None:
    """Path of the ``java`` executable, or None (tests monkeypatch this)."""
    return shutil.which("java")


def ptb_tokenize(captions: Mapping[Hashable, Sequence[str]], java: str) -> dict[Hashable, list[str]]:
    """Tokenise with the toolkit's PTB jar and punctuation filter: key -> tokenised captions
    (lower-cased, tokens joined by single spaces)."""
    # heavy: pycocoevalcap (Java scorers), only when captions are scored
    from pycocoevalcap.tokenizer import ptbtokenizer as ptb

    keys = [k for k, caps in captions.items() for _ in caps]
    sentences = []
    for caps in captions.values():
        for c in caps:
            c = c.replace("\n", " ")
            for br in _LINE_BREAKS:
                c = c.replace(br, " ")
            sentences.append(c)
    jar_dir = Path(ptb.__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="mmapp-ptb-") as tmp:
        text_file = Path(tmp) / "captions.txt"
        text_file.write_bytes("\n".join(sentences).encode())
        cmd = [java, "-cp", ptb.STANFORD_CORENLP_3_4_1_JAR, "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", str(text_file)]
        proc = subprocess.run(cmd, cwd=jar_dir, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the PTB tokenizer (java) failed with exit code {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip()[-500:]}")
    lines = proc.stdout.decode().split("\n")
    if len(lines) == len(sentences) + 1 and lines[-1] == "":
        lines = lines[:-1]
    if len(lines) != len(sentences):
        raise RuntimeError(f"the PTB tokenizer returned {len(lines)} lines for {len(sentences)} captions")
    out: dict[Hashable, list[str]] = {k: [] for k in captions}
    for k, line in zip(keys, lines):
        out[k].append(" ".join(w for w in line.rstrip().split(" ") if w not in ptb.PUNCTUATIONS))
    return out


def python_tokenize(captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """Approximation of ``ptb_tokenize`` without Java: Treebank tokens (brackets as -lrb- etc.,
    quotes as `` and '', as PTB), lower-cased, the toolkit's punctuation list removed."""
    # heavy: nltk and pycocoevalcap, only without Java
    from nltk.tokenize import TreebankWordTokenizer
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

    tok = TreebankWordTokenizer()
    out: dict[Hashable, list[str]] = {}
    for k, caps in captions.items():
        out[k] = []
        for c in caps:
            words = [w.lower() for w in tok.tokenize(" ".join(c.split()), convert_parentheses=True)]
            out[k].append(" ".join(w for w in words if w and w not in PUNCTUATIONS))
    return out


def _meteor(gts: dict, res: dict) -> tuple[float, list[float]]:
    # heavy: pycocoevalcap
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()  # one Java process for the whole call
    try:
        score, scores = scorer.compute_score(gts, res)
    finally:
        del scorer  # closes the Java process now rather than at interpreter exit
    return float(score), [float(s) for s in scores]


def score_captions(gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, str],
                   with_meteor: bool = True) -> CaptionScores:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of one caption per image against its references.

    gts: image id -> reference captions (at least one); res: image id -> candidate caption. Every
    id in ``res`` must be in ``gts``; the scores cover exactly the ids in ``res``.
    ``with_meteor=False`` skips METEOR (its Java start costs seconds), e.g. for validation
    during training; it is then reported as not requested.
    """
    # heavy: pycocoevalcap
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if not res:
        raise DataError("no captions to score")
    ids = list(res)
    for i in ids:
        if i not in gts or not gts[i]:
            raise DataError(f"image id {i!r} has no reference captions")
        if not isinstance(res[i], str):
            raise DataError(f"image id {i!r}: the caption must be a string, got {type(res[i]).__name__}")
    joint = {("gt", i): list(gts[i]) for i in ids} | {("res", i): [res[i]] for i in ids}

    java = find_java()
    notes: list[str] = []
    if java is not None:
        tokens, tokenizer = ptb_tokenize(joint, java), PTB_TOKENIZER
    else:
        tokens, tokenizer = python_tokenize(joint), NO_JAVA_TOKENIZER
        notes.append(f"tokenizer: {NO_JAVA_TOKENIZER}")
    tok_gts = {i: tokens[("gt", i)] for i in ids}
    tok_res = {i: tokens[("res", i)] for i in ids}

    overall: dict[str, Any] = {}
    per_image: dict[Hashable, dict[str, float]] = {i: {} for i in ids}

    def record(name: str, score: float, scores: Sequence[float]) -> None:
        overall[name] = float(score)
        for i, s in zip(ids, scores):  # the scorers iterate gts.keys(), which follow ``ids``
            per_image[i][name] = float(s)

    bleu, bleus = Bleu(4).compute_score(tok_gts, tok_res, verbose=0)
    for n in range(4):
        record(f"Bleu_{n + 1}", bleu[n], bleus[n])
    if not with_meteor:
        overall["METEOR"] = {"available": False, "reason": "not requested"}
    elif java is not None:
        try:
            record("METEOR", *_meteor(tok_gts, tok_res))
        except (OSError, ValueError) as e:  # the Java process died or answered nonsense
            reason = f"the METEOR Java process failed ({type(e).__name__}: {e})"
            overall["METEOR"] = {"available": False, "reason": reason}
            notes.append(f"METEOR: {reason}")
    else:
        overall["METEOR"] = {"available": False, "reason": NO_JAVA_METEOR}
        notes.append(f"METEOR: {NO_JAVA_METEOR}")
    record("ROUGE_L", *Rouge().compute_score(tok_gts, tok_res))
    record("CIDEr", *Cider().compute_score(tok_gts, tok_res))
    overall["SPICE"] = {"available": False, "reason": SPICE_UNAVAILABLE}
    return CaptionScores(overall=overall, per_image=per_image, tokenizer=tokenizer, notes=tuple(notes))


def _references(annotations_json: Any, name: str) -> dict[int, list[str]]:
    if not isinstance(annotations_json, Mapping) or not isinstance(annotations_json.get("annotations"), list):
        raise DataError(f"{name}: not a COCO captions file (expected an object with an 'annotations' list)")
    refs: dict[int, list[str]] = {}
    for i, ann in enumerate(annotations_json["annotations"]):
        if not isinstance(ann, Mapping) or "image_id" not in ann or not isinstance(ann.get("caption"), str):
            raise DataError(f"{name}: annotations[{i}] needs 'image_id' and a string 'caption'")
        refs.setdefault(ann["image_id"], []).append(ann["caption"])
    return refs


def _candidates(results: Any, refs: Mapping[int, list[str]], name: str) -> dict[int, str]:
    out = check_results(results, refs, name, "caption", "image_id", "caption", "no reference caption in the annotations")
    if not out:
        raise DataError(f"{name}: the results file holds no captions")
    return out


def score_results_file(results_path: str | os.PathLike, annotations_path: str | os.PathLike,
                       max_missing_listed: int = 20) -> dict[str, Any]:
    """Score a COCO results file ``[{"image_id", "caption"}]`` against COCO caption annotations.

    Unknown or duplicate image ids raise DataError naming the file and record. Annotated images
    without a result are not scored; they are counted in ``num_missing``. Returns
    ``CaptionScores.to_dict()`` plus ``num_missing`` and ``missing_image_ids`` (the first few).
    """
    refs = _references(load_json(annotations_path, "COCO captions annotations file"), str(annotations_path))
    cands = _candidates(load_json(results_path, "caption results file"), refs, str(results_path))
    result = score_captions(refs, cands).to_dict()
    missing = [i for i in refs if i not in cands]
    result["num_missing"] = len(missing)
    result["missing_image_ids"] = missing[:max_missing_listed]
    return result
