"""Recurrent cells behind one interface: ``cell(x, (h, c)) -> (h, c)``.

``c`` is the LSTM memory cell; cells without one (GRU, plain RNN) pass it through unchanged so that
every recurrent decoder carries the same state tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

CELLS = ("lstm", "gru", "peephole", "rnn")


class LSTMCell(nn.LSTMCell):
    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """x (B, I), h/c (B, S) -> h, c (B, S)."""
        return super().forward(x, state)


class GRUCell(nn.GRUCell):
    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        h, c = state
        return super().forward(x, h), c


class RNNCell(nn.RNNCell):
    """Plain tanh RNN: h' = tanh(W x + U h + b)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, nonlinearity="tanh")

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        h, c = state
        return super().forward(x, h), c


class PeepholeLSTMCell(nn.Module):
    """LSTM whose gates also see the memory cell (Gers & Schmidhuber, 2000).

    i = s(W_i x + U_i h + p_i * c),  f = s(W_f x + U_f h + p_f * c),  g = tanh(W_g x + U_g h)
    c' = f * c + i * g,  o = s(W_o x + U_o h + p_o * c'),  h' = o * tanh(c')
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.x2gates = nn.Linear(input_size, 4 * hidden_size)
        self.h2gates = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.peep_i = nn.Parameter(torch.zeros(hidden_size))
        self.peep_f = nn.Parameter(torch.zeros(hidden_size))
        self.peep_o = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        gi, gf, gg, go = (self.x2gates(x) + self.h2gates(h)).chunk(4, dim=-1)  # 4 x (B, S)
        i = torch.sigmoid(gi + self.peep_i * c)
        f = torch.sigmoid(gf + self.peep_f * c)
        c_next = f * c + i * torch.tanh(gg)
        o = torch.sigmoid(go + self.peep_o * c_next)
        return o * torch.tanh(c_next), c_next


def make_cell(kind: str, input_size: int, hidden_size: int) -> nn.Module:
    cells = {"lstm": LSTMCell, "gru": GRUCell, "peephole": PeepholeLSTMCell, "rnn": RNNCell}
    if kind not in cells:
        raise ValueError(f"unknown recurrent cell {kind!r}; choose one of {', '.join(CELLS)}")
    return cells[kind](input_size, hidden_size)
