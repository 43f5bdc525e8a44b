"""VQA model: question encoder, question-guided attention over the grid, fusion, answer classifier.

Follows "Show, Ask, Attend, and Answer" (Kazemi and Elqursh, 2017): L2-normalised image features,
G attention glimpses computed from image and question together, the attended features fused with
the question (concatenation or element-wise product), and a classifier over the N top answers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from mmapp.config import VQAConfig
from mmapp.models.image_rows import ImageRows
from mmapp.models.imagenet_evidence import ImageNetEvidence


def cell_coordinates(features: Tensor) -> Tensor:
    """(x, y) in [-1, 1] of every cell of a square grid, shaped like ``features``: (B, P, 2)."""
    B, P, _ = features.shape
    side = int(round(P ** 0.5))
    if side * side != P:
        raise ValueError(f"vqa.coords needs a square grid, got P={P}")
    axis = torch.linspace(-1.0, 1.0, side, device=features.device, dtype=features.dtype)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x, y], dim=-1).view(1, P, 2).expand(B, P, 2)


def glimpse_offsets(attention: Tensor) -> Tensor:
    """attention (B, G, P) over a square grid -> (B, G(G-1)): for every pair g < h of glimpses, the
    (x, y) of where glimpse g looked (its attention-weighted cell coordinates, in [-1, 1]) minus
    where glimpse h looked. "Is the A left of the B?" is then a sign the classifier can read, once
    one glimpse finds A and another B."""
    B, G, P = attention.shape
    where = attention @ cell_coordinates(attention.new_zeros(1, P, 1))[0]  # (B, G, 2)
    pairs = torch.triu_indices(G, G, offset=1, device=attention.device)  # (2, G(G-1)/2)
    return (where[:, pairs[0]] - where[:, pairs[1]]).flatten(1)  # (B, G(G-1))


class ChannelAffine:
    """A per-channel ``x * scale + shift`` (the LayerNorm's own, left out of the normalised grid), or
    the identity (``scale`` None). It commutes with a weighted sum whose weights sum to 1 (a glimpse,
    a mean) and folds into a linear layer, so the grid itself needs no gradient: the features are
    frozen, and the (B, P, D) backward passes that only carried the LayerNorm's gradient are gone."""

    def __init__(self, scale: Tensor | None = None, shift: Tensor | None = None) -> None:
        self.scale, self.shift = scale, shift

    def extended(self, channels: int) -> "ChannelAffine":
        """The same map over ``channels`` more channels (e.g. cell coordinates), left as they are."""
        if self.scale is None:
            return self
        return ChannelAffine(torch.cat([self.scale, self.scale.new_ones(channels)]),
                             torch.cat([self.shift, self.shift.new_zeros(channels)]))

    def __call__(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D): the grid, or a sum of it with weights summing to 1."""
        return x if self.scale is None else torch.addcmul(self.shift, x, self.scale)

    def linear(self, layer: nn.Linear, x: Tensor) -> Tensor:
        """``layer(self(x))`` computed as one linear map of x."""
        if self.scale is None:
            return layer(x)
        bias = layer.weight @ self.shift + (layer.bias if layer.bias is not None else 0.0)
        return F.linear(x, layer.weight * self.scale, bias)


def attend_per_image(weights: Tensor, features: Tensor, image_index: Tensor) -> Tensor:
    """weights (B, G, P) of B questions, features (I, P, D) of I images, image_index (B,)
    -> (B, G, D) with row b = weights[b] @ features[image_index[b]].

    The questions of each image are stacked into one block (``ImageRows``) so that one batched
    matmul serves them all, without copying an image's (P, D) grid once per question.
    """
    return ImageRows.for_rows(features, image_index).weighted(weights)


class QuestionEncoder(nn.Module):
    """Word embedding + recurrent encoder over a padded question batch (packed sequences)."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, cell: str = "lstm") -> None:
        super().__init__()
        rnns = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
        if cell not in rnns:
            raise ValueError(f"vqa.cell must be one of {', '.join(rnns)}, got {cell!r}")
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.rnn = rnns[cell](embed_dim, hidden_dim, batch_first=True)

    def forward(self, questions: Tensor, lengths: Tensor, initial: tuple[Tensor, Tensor] | None = None,
                packed: bool = True) -> Tensor:
        """questions (B, L) padded with 0, lengths (B,) >= 1, optional first state (h0, c0) (B, Q) each
        (``vqa.image_first``; c0 unused by GRU / RNN cells) -> question vector (B, Q).

        ``packed=False`` runs every row through all L words and reads each row's output at its last
        word: the same vector (the recurrence is causal), without copying ``lengths`` to the host
        (what a CUDA graph needs, ``mmapp.speed``)."""
        embedded = torch.tanh(self.embedding(questions))  # (B, L, E)
        hx = None
        if initial is not None:  # in batch order: the packed LSTM permutes hx itself
            h0, c0 = (t.unsqueeze(0).contiguous() for t in initial)  # (1, B, Q)
            hx = (h0, c0) if isinstance(self.rnn, nn.LSTM) else h0
        if not packed:
            outputs, _ = self.rnn(embedded, hx)  # (B, L, Q)
            last = (lengths.clamp(min=1) - 1).view(-1, 1, 1).expand(-1, 1, outputs.shape[-1])  # (B, 1, Q)
            return outputs.gather(1, last).squeeze(1)  # (B, Q)
        sequences = pack_padded_sequence(embedded, lengths.clamp(min=1).cpu(), batch_first=True,
                                         enforce_sorted=False)
        _, hidden = self.rnn(sequences, hx)
        h = hidden[0] if isinstance(hidden, tuple) else hidden  # (layers, B, Q)
        return h[-1]


def soft_count_bins(count: Tensor, max_count: int) -> Tensor:
    """count (B,) >= 0 -> (B, max_count + 1): triangular soft one-hot, bin k = max(0, 1 - |count - k|)
    (a count of 2.3 is 0.7 in bin 2 and 0.3 in bin 3), so a linear layer can read any count."""
    bins = torch.arange(max_count + 1, device=count.device, dtype=count.dtype)
    return (1.0 - (count.clamp(0, max_count).unsqueeze(-1) - bins).abs()).clamp(min=0)


class GlimpseAttention(nn.Module):
    """G attention maps (logits) over P cells, each conditioned on the question (plus ``extra_maps``
    more maps from the same joint features, e.g. the count map)."""

    def __init__(self, feature_dim: int, question_dim: int, attention_dim: int, glimpses: int,
                 dropout: float, extra_maps: int = 0) -> None:
        super().__init__()
        self.feature_proj = nn.Linear(feature_dim, attention_dim, bias=False)
        self.question_proj = nn.Linear(question_dim, attention_dim)
        self.score = nn.Linear(attention_dim, glimpses + extra_maps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: Tensor, question: Tensor, image_index: Tensor | None = None,
                with_joint: bool = False, affine: ChannelAffine | None = None):
        """features (B, P, D), question (B, Q) -> attention logits (B, G + extra_maps, P) (softmax
        over P gives the glimpses), and with ``with_joint`` the joint features (B, P, A) they are scored from.

        With ``image_index`` (B,), features are (I, P, D) and question b is about image ``image_index[b]``.
        With ``affine``, the features are ``affine(features)``.
        """
        keys = self.dropout((affine or ChannelAffine()).linear(self.feature_proj, features))  # (I or B, P, A): once per image
        query = self.question_proj(self.dropout(question)).unsqueeze(1)  # (B, 1, A)
        if image_index is not None:  # a copy per question, then in place on it (two (B, P, A) tensors fewer)
            joint = keys.index_select(0, image_index).add_(query).relu_()  # (B, P, A)
        else:
            joint = F.relu(keys + query)  # (B, P, A)
        logits = self.score(self.dropout(joint)).transpose(1, 2)  # (B, G + extra_maps, P)
        return (logits, joint) if with_joint else logits


class CountHead(nn.Module):
    """The count map from the attention's joint features with context from the neighbouring cells:
    1x1 to ``count_context`` channels, then two 3x3 convolutions over the (square) grid. (B, P, A) -> logits (B, P).

    It reads the joint features without sending gradients back into them: trained through them, the
    count map's loss held back what the glimpses learn (position questions stayed near chance for
    five epochs in three runs on the shapes data, against 0.85 without a count map)."""

    def __init__(self, attention_dim: int, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(attention_dim, channels, 1), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(channels, 1, 3, padding=1))
        with torch.no_grad():  # start near a count of zero (sigmoid(-4) = 0.018 per cell), not P / 2
            self.net[-1].bias.fill_(-4.0)

    def forward(self, joint: Tensor) -> Tensor:
        B, P, A = joint.shape
        side = math.isqrt(P)
        if side * side != P:
            raise ValueError(f"vqa.count_context needs a square grid, got {P} cells")
        grid = joint.detach().transpose(1, 2).reshape(B, A, side, side)  # (B, A, H, W)
        return self.net(grid).flatten(1)  # (B, P)


class VQANet(nn.Module):
    """Question-guided attention VQA model; see ``forward``."""

    def __init__(self, cfg: VQAConfig) -> None:
        super().__init__()
        if cfg.vocab_size < 5 or (cfg.head == "classify" and cfg.num_answers < 2):
            raise ValueError("vqa.vocab_size and vqa.num_answers must be set")
        self.cfg = cfg
        # True (``mmapp.speed.fixed_shapes.use_static_shapes``): nothing in ``forward`` waits for the
        # device (questions not packed, grids gathered per question), as a CUDA graph needs
        self.static_shapes = False
        self.question_encoder = QuestionEncoder(cfg.vocab_size, cfg.embed_dim, cfg.question_dim, cfg.cell)
        # image_first: the question LSTM's (h0, c0) from the mean-pooled normalised grid
        self.image_init = nn.Linear(cfg.encoder_dim, 2 * cfg.question_dim) if cfg.image_first else None
        feature_dim = cfg.encoder_dim + (2 if cfg.coords else 0)
        self.norm = nn.LayerNorm(cfg.encoder_dim) if cfg.feature_norm == "layer" else None
        self.attention = GlimpseAttention(feature_dim, cfg.question_dim, cfg.attention_dim, cfg.glimpses,
                                          cfg.dropout, extra_maps=1 if cfg.count_map and not cfg.count_context else 0)
        self.count_head = CountHead(cfg.attention_dim, cfg.count_context) if cfg.count_context else None
        image_dim = cfg.glimpses * (feature_dim + (1 if cfg.count else 0))
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.fusion == "concat":
            self.fuse_image: nn.Module | None = None
            self.fuse_question: nn.Module | None = None
            fused_dim = image_dim + cfg.question_dim
        else:
            self.fuse_image = nn.Linear(image_dim, cfg.hidden_dim)
            self.fuse_question = nn.Linear(cfg.question_dim, cfg.hidden_dim)
            fused_dim = cfg.hidden_dim
        pairs = cfg.glimpses * (cfg.glimpses - 1)  # (x, y) per pair of glimpses
        self.relation_gates = nn.Linear(cfg.question_dim, cfg.relation_gates * pairs) if cfg.relation_gates else None
        if cfg.relation:  # offsets between every pair of glimpses' attended positions, raw or gated
            fused_dim += cfg.relation_gates or pairs
        if cfg.count_map:  # the count map's total as soft bins 0..count_map
            fused_dim += cfg.count_map + 1
        if cfg.count_map and not cfg.count_context:
            with torch.no_grad():  # start near a count of zero (sigmoid(-4) = 0.018 per cell), not P / 2
                self.attention.score.bias[-1] = -4.0
        self.fused_dim = fused_dim
        if cfg.head == "classify":  # generate: models/answer_decoder.py writes the answer from ``fused``
            self.classifier = nn.Sequential(nn.Linear(fused_dim, cfg.hidden_dim), nn.ReLU(),
                                            nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden_dim, cfg.num_answers))
        # vqa.readout: the attended cell -> answer logits directly, gated by the fused vector
        self.readout = nn.Linear(feature_dim, cfg.num_answers) if cfg.readout else None
        self.readout_gate = nn.Linear(fused_dim, 1) if cfg.readout else None
        start, stop = cfg.imagenet_channels
        self.imagenet = (ImageNetEvidence(cfg.imagenet_classes, cfg.num_answers, stop - start)
                         if cfg.imagenet_weight and cfg.imagenet_classes else None)
        # vqa.copy_mentions: each answer's words as question-vocabulary ids (N, M), 0 past its last word
        self.register_buffer("mention_ids", torch.zeros(cfg.num_answers, max(cfg.mention_words, 1), dtype=torch.long)
                             if cfg.copy_mentions else None)
        self.mention_gate = nn.Linear(fused_dim, 1) if cfg.copy_mentions else None

    def forward(self, features: Tensor, questions: Tensor, lengths: Tensor,
                image_index: Tensor | None = None, with_count_map: bool = False):
        """features (B, P, D) (or (I, P, D) for I images with ``image_index`` (B,) naming each
        question's image), questions (B, L), lengths (B,) -> logits (B, N), attention (B, G, P),
        and with ``with_count_map`` the count map's logits (B, P) (``vqa.count_map``; None without)."""
        grid, affine, fused, attention, count_map = self.encode_parts(features, questions, lengths, image_index)
        logits = self.classifier(fused)  # (B, N)
        if self.readout is not None:
            logits = logits + self.read_out(features, grid, affine, fused, attention, image_index)
        if self.mention_gate is not None:
            logits = logits + self.mention_gate(fused) * self.mentioned(questions).to(logits.dtype)  # (B, N)
        if with_count_map:
            return logits, attention, count_map
        return logits, attention

    @torch.no_grad()
    def fill_mentions(self, answer_ids: list[list[int]]) -> "VQANet":
        """``vqa.copy_mentions``: each answer's question-vocabulary ids ([]: a word no question uses)."""
        longest = max(map(len, answer_ids), default=0)
        if len(answer_ids) != len(self.mention_ids) or longest > self.mention_ids.shape[1]:
            raise ValueError(f"{len(answer_ids)} answers of up to {longest} words for {tuple(self.mention_ids.shape)}")
        self.mention_ids.zero_()
        for n, ids in enumerate(answer_ids):
            self.mention_ids[n, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return self

    def mentioned(self, questions: Tensor) -> Tensor:
        """questions (B, L) of vocabulary ids (0: padding) -> (B, N) bool: the answer's words are all in it."""
        present = questions.new_zeros(len(questions), self.cfg.vocab_size, dtype=torch.bool)
        present.scatter_(1, questions, True)  # (B, V)
        present[:, 0] = False  # padding is no word
        ids = self.mention_ids  # (N, M); a row of zeros: never mentioned
        return (present[:, ids] | ids.eq(0)).all(dim=-1) & ids.gt(0).any(dim=1)  # (B, N, M) -> (B, N)

    def pool(self, weights: Tensor, features: Tensor, image_index: Tensor | None) -> Tensor:
        """weights (B, G, P), features (B, P, D) (or (I, P, D) with ``image_index`` (B,)) -> (B, G, D)."""
        if image_index is None:
            return torch.bmm(weights, features)
        if self.static_shapes:  # attend_per_image's blocks need the largest count on the host
            return torch.bmm(weights, features.index_select(0, image_index))
        return attend_per_image(weights, features, image_index)

    def read_out(self, features: Tensor, grid: Tensor, affine: ChannelAffine, fused: Tensor, attention: Tensor,
                 image_index: Tensor | None) -> Tensor:
        """``vqa.readout``: the glimpses' mean map's attended cell (normalised: ``affine(grid)``, B x D')
        through a linear layer, plus ``vqa.imagenet_weight`` x the ImageNet evidence of its raw head
        channels, all scaled by sigmoid(gate(fused)) (B, 1), so that a question can shut it off -> (B, N)."""
        where = attention.mean(dim=1, keepdim=True)  # (B, 1, P)
        out = self.readout(affine(self.pool(where, grid, image_index).squeeze(1)))  # (B, N)
        if self.imagenet is not None:
            start, stop = self.cfg.imagenet_channels
            head = self.pool(where, features[..., start:stop], image_index).squeeze(1)  # (B, C)
            out = out + self.cfg.imagenet_weight * self.imagenet(head)
        return torch.sigmoid(self.readout_gate(fused)) * out

    def question_start(self, grid: Tensor, image_index: Tensor | None, affine: ChannelAffine | None = None
                       ) -> tuple[Tensor, Tensor] | None:
        """Normalised features ``affine(grid)`` (B or I, P, D) -> the question LSTM's (h0, c0) (B, Q)
        each with ``vqa.image_first``, else None."""
        if self.image_init is None:
            return None
        pooled = (affine or ChannelAffine())(grid.mean(dim=1))  # (B or I, D)
        if image_index is not None:
            pooled = pooled.index_select(0, image_index)  # (B, D)
        h0, c0 = self.image_init(pooled).chunk(2, dim=-1)  # (B, Q) x2
        return torch.tanh(h0), c0

    def encode(self, features: Tensor, questions: Tensor, lengths: Tensor, image_index: Tensor | None = None
               ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """What both heads read (inputs as ``forward``) -> normalised features (B or I, P, D'), the
        fused image + question (B, F), glimpse attention (B, G, P), count-map logits (B, P) or None."""
        grid, affine, fused, attention, count_map = self.encode_parts(features, questions, lengths, image_index)
        return affine(grid), fused, attention, count_map

    def normalise(self, features: Tensor) -> tuple[Tensor, ChannelAffine]:
        """features (B or I, P, D) -> (grid, affine): the normalised features are ``affine(grid)``; with
        ``vqa.feature_norm=layer`` the grid is the LayerNorm's output without its scale and shift."""
        if self.norm is None:
            return F.normalize(features, dim=-1), ChannelAffine()
        grid = F.layer_norm(features, self.norm.normalized_shape, None, None, self.norm.eps)
        return grid, ChannelAffine(self.norm.weight, self.norm.bias)

    def encode_parts(self, features: Tensor, questions: Tensor, lengths: Tensor, image_index: Tensor | None = None
                     ) -> tuple[Tensor, ChannelAffine, Tensor, Tensor, Tensor | None]:
        """``encode`` with the normalised features left as (grid, affine) (``normalise``)."""
        grid, affine = self.normalise(features)
        question = self.question_encoder(questions, lengths, self.question_start(grid, image_index, affine),
                                         packed=not self.static_shapes)  # (B, Q)
        if self.cfg.coords:
            grid = torch.cat([grid, cell_coordinates(grid)], dim=-1)  # (B or I, P, D + 2)
            affine = affine.extended(2)
        if self.count_head is not None:
            logits, joint = self.attention(grid, question, image_index, with_joint=True,
                                           affine=affine)  # (B, G, P), (B, P, A)
            count_map = self.count_head(joint)  # (B, P): where the asked-about objects are
        else:
            logits = self.attention(grid, question, image_index, affine=affine)  # (B, G (+1), P)
            count_map = logits[:, -1] if self.cfg.count_map else None  # (B, P)
        logits = logits[:, : self.cfg.glimpses]  # (B, G, P)
        attention = logits.softmax(dim=-1)
        glimpses = affine(self.pool(attention, grid, image_index)).flatten(1)  # (B, G*D)
        if self.cfg.count:
            glimpses = torch.cat([glimpses, torch.sigmoid(logits).sum(dim=-1)], dim=-1)  # (B, G*D + G)
        if self.fuse_image is None:
            fused = torch.cat([self.dropout(glimpses), self.dropout(question)], dim=-1)  # (B, G*D + Q)
        else:
            fused = torch.relu(self.fuse_image(self.dropout(glimpses))) * torch.relu(
                self.fuse_question(self.dropout(question)))  # (B, F)
        if self.cfg.relation:
            offsets = glimpse_offsets(attention)  # (B, G(G-1))
            if self.relation_gates is not None:  # R question-chosen directions: (B, R)
                directions = self.relation_gates(question).view(len(offsets), -1, offsets.shape[1])
                offsets = (directions * offsets.unsqueeze(1)).sum(dim=-1)
            fused = torch.cat([fused, offsets], dim=-1)  # (B, F + G(G-1) or R)
        if count_map is not None:
            count = torch.sigmoid(count_map).sum(dim=-1)  # (B,)
            fused = torch.cat([fused, soft_count_bins(count, self.cfg.count_map)], dim=-1)  # (B, ... + C + 1)
        return grid, affine, fused, attention, count_map
