"""Self-critical sequence training for the captioner (Rennie et al., 2017), as self-critical.pytorch's
"new self-critical" variant does it: K captions sampled per image, each rewarded with its CIDEr-D
against the image's training references, and each sample's baseline is the mean reward of the
image's other K - 1 samples (no greedy decode needed). The loss is the REINFORCE estimate
``-(reward - baseline) * log p(word)`` averaged over the sampled words.

An optional penalty subtracts ``hallucination_weight`` per object a sample names that its image lacks
(CHAIR's hallucinations, from the training images' instances): cross-entropy teaches which words
follow which, never what naming a red square next to a red circle and a blue square costs.
"""

from __future__ import annotations

from typing import Callable, Hashable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from mmapp.metrics.cider_reward import CiderD
from mmapp.metrics.hallucination import is_present
from mmapp.models.decoder_base import CaptionDecoder
from mmapp.models.decoding import sample
from mmapp.vocab import Vocab


class CaptionReward:
    """reward(image_id, words) = CIDEr-D(words | the image's references) - weight x hallucinations.

    references: image id -> token lists; present / mentions (both or neither): image id -> the
    categories in the image, and caption -> the categories it names (``mmapp.metrics.hallucination``).
    """

    def __init__(self, references: Mapping[Hashable, Sequence[Sequence[str]]],
                 present: Mapping[Hashable, Iterable[Hashable]] | None = None,
                 mentions: Callable[[str], Iterable[Hashable]] | None = None,
                 hallucination_weight: float = 0.0) -> None:
        if hallucination_weight > 0 and (present is None or mentions is None):
            raise ValueError("a hallucination penalty needs the objects present in each image and a mention parser")
        self.cider = CiderD(references)
        self.present = {k: set(v) for k, v in present.items()} if present is not None else {}
        self.mentions, self.weight = mentions, hallucination_weight

    def hallucinations(self, image_id: Hashable, words: Sequence[str]) -> int:
        if self.mentions is None:
            return 0
        present = self.present.get(image_id)
        if present is None:
            raise KeyError(f"image {image_id!r} has no list of present objects")
        named = dict.fromkeys(self.mentions(" ".join(words)))  # each category once, as CHAIR-i counts
        return sum(not is_present(m, present) for m in named)

    def __call__(self, image_id: Hashable, words: Sequence[str]) -> tuple[float, float, int]:
        """-> (reward, CIDEr-D, hallucinated mentions)."""
        cider = self.cider.score(image_id, words)
        wrong = self.hallucinations(image_id, words) if self.weight > 0 else 0
        return cider - self.weight * wrong, cider, wrong


def self_critical_loss(decoder: CaptionDecoder, features: Tensor, image_ids: Sequence[Hashable],
                       reward: CaptionReward, vocab: Vocab, num_samples: int,
                       max_len: int) -> tuple[Tensor, dict[str, float]]:
    """features (I, P, D) of images ``image_ids`` -> the REINFORCE loss of ``num_samples`` sampled
    captions per image with the leave-one-out baseline, and its statistics (mean reward, CIDEr-D,
    hallucinated mentions per caption, words per caption)."""
    K = num_samples
    drawn = sample(decoder, features, K, max_len, vocab.start_id, vocab.end_id, vocab.pad_id)
    scores, ciders, wrong, lengths = [], [], [], []
    for row, tokens in enumerate(drawn.tokens.tolist()):
        words = vocab.decode(tokens)
        r, c, h = reward(image_ids[row // K], words)
        scores.append(r)
        ciders.append(c)
        wrong.append(h)
        lengths.append(len(words))
    rewards = torch.tensor(scores, dtype=torch.float32, device=features.device).view(-1, K)  # (I, K)
    baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (K - 1)  # mean of the other samples
    advantage = (rewards - baseline).view(-1, 1)  # (I*K, 1)
    mask = drawn.mask.float()  # (I*K, T)
    loss = -(advantage * drawn.logp * mask).sum() / mask.sum().clamp(min=1.0)
    n = len(scores)
    return loss, {"reward": sum(scores) / n, "cider": sum(ciders) / n, "hallucinated": sum(wrong) / n,
                  "words": sum(lengths) / n}
