"""CIDEr-D as a training reward: document frequencies of a fixed reference corpus, computed once.

Self-critical sequence training (``mmapp.tasks.caption``, ``train.self_critical_after``) scores tens
of thousands of sampled captions per epoch against their image's training references. The
evaluation scorer (``pycocoevalcap``'s ``Cider``) recomputes document frequencies from whatever it
is given and runs the Java tokenizer; here, as in self-critical.pytorch's ``CiderD`` with
``df="coco-train"``, the frequencies come from the whole training corpus and the references' n-gram
vectors are built once per image. Captions are token lists (the vocabulary's own tokenisation).

The formula is ``pycocoevalcap``'s CIDEr-D: n = 1..4, tf-idf vectors, clipped products
``min(hyp, ref) * ref``, the Gaussian length penalty with sigma 6, the mean over n and references,
times 10. With the frequencies taken from the scored set itself, the scores equal ``Cider``'s
(``tests/test_scst.py`` checks that).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Hashable, Mapping, Sequence

N_MAX = 4
SIGMA = 6.0

Vector = list[dict[tuple[str, ...], float]]  # per n: n-gram -> tf-idf weight


def _ngrams(tokens: Sequence[str]) -> Counter:
    counts: Counter = Counter()
    for n in range(1, N_MAX + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i:i + n])] += 1
    return counts


class CiderD:
    """references: image id -> its reference captions (token lists). ``score(image_id, tokens)``
    gives the CIDEr-D of one caption of that image against its references."""

    def __init__(self, references: Mapping[Hashable, Sequence[Sequence[str]]]) -> None:
        if not references:
            raise ValueError("CIDEr-D needs at least one image with references")
        df: Counter = Counter()
        counts = {}
        for image_id, refs in references.items():
            counts[image_id] = [_ngrams(r) for r in refs]
            df.update({g for c in counts[image_id] for g in c})  # an n-gram counts once per image
        self._df = df
        self._log_images = math.log(float(len(references)))
        self._refs = {image_id: [self._vector(c) for c in cs] for image_id, cs in counts.items()}

    def _vector(self, counts: Counter) -> tuple[Vector, list[float], int]:
        vec: Vector = [defaultdict(float) for _ in range(N_MAX)]
        norm = [0.0] * N_MAX
        length = 0
        for gram, tf in counts.items():
            n = len(gram) - 1
            weight = float(tf) * (self._log_images - math.log(max(1.0, float(self._df.get(gram, 0.0)))))
            vec[n][gram] = weight
            norm[n] += weight * weight
            if n == 1:
                length += tf  # the number of bigrams, as pycocoevalcap measures length
        return vec, [math.sqrt(x) for x in norm], length

    def score(self, image_id: Hashable, tokens: Sequence[str]) -> float:
        refs = self._refs.get(image_id)
        if refs is None:
            raise KeyError(f"image {image_id!r} has no references for the CIDEr-D reward")
        vec, norm, length = self._vector(_ngrams(tokens))
        total = [0.0] * N_MAX
        for ref_vec, ref_norm, ref_length in refs:
            delta = float(length - ref_length)
            for n in range(N_MAX):
                dot = sum(min(w, ref_vec[n][g]) * ref_vec[n][g] for g, w in vec[n].items() if g in ref_vec[n])
                if norm[n] != 0 and ref_norm[n] != 0:
                    dot /= norm[n] * ref_norm[n]
                total[n] += dot * math.exp(-(delta ** 2) / (2 * SIGMA ** 2))
        return sum(total) / N_MAX / len(refs) * 10.0
