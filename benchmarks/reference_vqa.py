"""A faithful reimplementation of a widely used VQA baseline, for the VQA benchmark's ratios.

Source: Cyanogenoid/pytorch-vqa (``model.py``, ``train.py``, ``config.py``), a reimplementation of
"Show, Ask, Attend, and Answer" (Kazemi and Elqursh, 2017): question LSTM (300-d embeddings, 1024
units, its cell state as the question vector), 2-glimpse attention over 14x14x2048 ResNet grids (1x1
convolutions), concatenation fusion and a 1024-unit classifier over 3000 answers. The training step is
``train.run``'s: ``-log_softmax``, ``(nll * a / 10).sum(1).mean()``, backward, Adam.

Departures that do not change the cost: no ``config`` module (dimensions are arguments),
``init.xavier_uniform_`` for the deprecated ``init.xavier_uniform``, an explicit softmax ``dim``, and
the batch given on whatever device its tensors are (the original calls ``.cuda()``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init
from torch.nn.utils.rnn import pack_padded_sequence


class Net(nn.Module):
    """``model.Net``: text processor, attention, classifier."""

    def __init__(self, embedding_tokens: int, vision_features: int = 2048, max_answers: int = 3000) -> None:
        super().__init__()
        question_features, glimpses = 1024, 2
        self.text = TextProcessor(embedding_tokens, 300, question_features, drop=0.5)
        self.attention = Attention(vision_features, question_features, 512, glimpses, drop=0.5)
        self.classifier = Classifier(glimpses * vision_features + question_features, 1024, max_answers, drop=0.5)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    m.bias.data.zero_()

    def forward(self, v: Tensor, q: Tensor, q_len: Tensor) -> Tensor:
        """v (B, D, H, W), q (B, L) sorted by decreasing length, q_len (B,) -> answer logits (B, N)."""
        q = self.text(q, list(q_len.data))
        v = v / (v.norm(p=2, dim=1, keepdim=True).expand_as(v) + 1e-8)
        a = self.attention(v, q)
        v = apply_attention(v, a)
        combined = torch.cat([v, q], dim=1)
        return self.classifier(combined)


class Classifier(nn.Sequential):
    def __init__(self, in_features: int, mid_features: int, out_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.add_module("drop1", nn.Dropout(drop))
        self.add_module("lin1", nn.Linear(in_features, mid_features))
        self.add_module("relu", nn.ReLU())
        self.add_module("drop2", nn.Dropout(drop))
        self.add_module("lin2", nn.Linear(mid_features, out_features))


class TextProcessor(nn.Module):
    def __init__(self, embedding_tokens: int, embedding_features: int, lstm_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(embedding_tokens, embedding_features, padding_idx=0)
        self.drop = nn.Dropout(drop)
        self.tanh = nn.Tanh()
        self.lstm = nn.LSTM(input_size=embedding_features, hidden_size=lstm_features, num_layers=1)
        self.features = lstm_features
        for weight in (self.lstm.weight_ih_l0, self.lstm.weight_hh_l0):
            for w in weight.chunk(4, 0):
                init.xavier_uniform_(w)
        self.lstm.bias_ih_l0.data.zero_()
        self.lstm.bias_hh_l0.data.zero_()
        init.xavier_uniform_(self.embedding.weight)

    def forward(self, q: Tensor, q_len: list) -> Tensor:
        embedded = self.embedding(q)
        tanhed = self.tanh(self.drop(embedded))
        packed = pack_padded_sequence(tanhed, q_len, batch_first=True)
        _, (_, c) = self.lstm(packed)
        return c.squeeze(0)


class Attention(nn.Module):
    def __init__(self, v_features: int, q_features: int, mid_features: int, glimpses: int, drop: float = 0.0) -> None:
        super().__init__()
        self.v_conv = nn.Conv2d(v_features, mid_features, 1, bias=False)
        self.q_lin = nn.Linear(q_features, mid_features)
        self.x_conv = nn.Conv2d(mid_features, glimpses, 1)
        self.drop = nn.Dropout(drop)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, v: Tensor, q: Tensor) -> Tensor:
        v = self.v_conv(self.drop(v))
        q = self.q_lin(self.drop(q))
        q = tile_2d_over_nd(q, v)
        x = self.relu(v + q)
        return self.x_conv(self.drop(x))


def apply_attention(input: Tensor, attention: Tensor) -> Tensor:  # noqa: A002 - the original's names
    n, c = input.size()[:2]
    glimpses = attention.size(1)
    input = input.view(n, c, -1)
    attention = attention.view(n, glimpses, -1)
    s = input.size(2)
    attention = attention.view(n * glimpses, -1)
    attention = F.softmax(attention, dim=1)
    target_size = [n, glimpses, c, s]
    input = input.view(n, 1, c, s).expand(*target_size)
    attention = attention.view(n, glimpses, 1, s).expand(*target_size)
    weighted = input * attention  # (n, glimpses, c, s) materialised, as in the original
    weighted_mean = weighted.sum(dim=3)
    return weighted_mean.view(n, -1)


def tile_2d_over_nd(feature_vector: Tensor, feature_map: Tensor) -> Tensor:
    n, c = feature_vector.size()
    spatial_size = feature_map.dim() - 2
    return feature_vector.view(n, c, *([1] * spatial_size)).expand_as(feature_map)


def train_step(net: Net, optimizer: torch.optim.Optimizer, v: Tensor, q: Tensor, a: Tensor, q_len: Tensor) -> float:
    """One step of ``train.run(train=True)``: a (B, N) answer counts (0..10)."""
    out = net(v, q, q_len)
    nll = -F.log_softmax(out, dim=1)
    loss = (nll * a / 10).sum(dim=1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()
