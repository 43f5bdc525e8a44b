"""Vanishing gradients in numbers: how strongly the loss at the LAST word of a long caption still
depends on the FIRST word, for each caption decoder.

For captions of T synthetic words (uniform over the vocabulary, first word included), the loss is the
cross-entropy of the last step's logits against a random word. Reported per decoder and T:

* ``|g_1|`` = ||dL_T / de_1||, the gradient norm w.r.t. the input word embedding of step 1
  (mean over a batch of captions; the batch rows do not interact);
* ``|g_1| / |g_T|``, its ratio to the gradient w.r.t. the last step's own embedding, a scale-free
  figure: how much of the signal that reaches the current word still reaches the first one;
* the per-word factor by which that ratio shrinks (1.0: no vanishing; 0.5: halved at every word).

Models run in eval mode (no dropout). Untrained decoders are built with one seed and PyTorch's
default initialisation: the same U(-1/sqrt(S), 1/sqrt(S)) scale for the RNN, LSTM, GRU cell weights.

    python scripts/vanishing_gradients.py                        # untrained rnn/lstm/gru/peephole/transformer
    python scripts/vanishing_gradients.py --checkpoint lstm=runs/compare_decoders/lstm/best.safetensors
"""

from __future__ import annotations

import argparse
from typing import Sequence

import torch
import torch.nn.functional as F

from mmapp.config import CaptionDecoderConfig
from mmapp.models.caption_decoder import build_caption_decoder
from mmapp.models.decoder_base import CaptionDecoder

FIRST_WORD_ID = 4  # ids below are <pad>, <start>, <end>, <unk>: synthetic captions use real words only


def first_word_gradients(decoder: CaptionDecoder, features: torch.Tensor, lengths: Sequence[int],
                         seed: int = 0) -> dict[int, tuple[float, float] | None]:
    """features (B, P, D) -> {T: (|g_1|, |g_1| / |g_T|)}; None where T exceeds a Transformer's max_len."""
    decoder.eval()
    B, V = features.shape[0], decoder.cfg.vocab_size
    captured: dict[str, torch.Tensor] = {}

    def keep_embedding(module, args, out):  # the (B, T, E) embeddings, to read their gradient
        out.retain_grad()
        captured["embedded"] = out

    handle = decoder.embedding.register_forward_hook(keep_embedding)
    results: dict[int, tuple[float, float] | None] = {}
    try:
        for T in lengths:
            if decoder.cfg.cell == "transformer" and T > decoder.cfg.max_len:
                results[T] = None
                continue
            g = torch.Generator().manual_seed(seed * 1000 + T)
            inputs = torch.randint(FIRST_WORD_ID, V, (B, T), generator=g)  # (B, T)
            target = torch.randint(FIRST_WORD_ID, V, (B,), generator=g)  # (B,)
            decoder.zero_grad(set_to_none=True)
            logits, _ = decoder(features, inputs)  # (B, T, V)
            F.cross_entropy(logits[:, -1], target, reduction="sum").backward()
            grad = captured["embedded"].grad  # (B, T, E)
            first, last = grad[:, 0].norm(dim=-1).mean(), grad[:, -1].norm(dim=-1).mean()
            results[T] = (float(first), float(first / last))
    finally:
        handle.remove()
        decoder.zero_grad(set_to_none=True)
    return results


def untrained_decoder(cell: str, vocab_size: int, encoder_dim: int, hidden_dim: int, embed_dim: int,
                      attention_dim: int, num_heads: int, max_len: int, seed: int = 0) -> CaptionDecoder:
    torch.manual_seed(seed)
    return build_caption_decoder(CaptionDecoderConfig(
        vocab_size=vocab_size, encoder_dim=encoder_dim, embed_dim=embed_dim, attention_dim=attention_dim,
        hidden_dim=hidden_dim, dropout=0.0, cell=cell, num_heads=num_heads, max_len=max_len))


def per_step_factor(by_length: dict[int, tuple[float, float] | None]) -> float | None:
    """The mean factor by which |g_1| / |g_T| shrinks per extra word: (r_b / r_a) ** (1 / (b - a)) between
    the shortest and the longest T where the ratio is measured and not zero (float32 underflow)."""
    points = sorted((T, v[1]) for T, v in by_length.items() if v is not None and v[1] > 0)
    if len(points) < 2:
        return None
    (a, ra), (b, rb) = points[0], points[-1]
    return (rb / ra) ** (1.0 / (b - a))


def markdown(rows: dict[str, dict[int, tuple[float, float] | None]], lengths: Sequence[int]) -> str:
    """One row per model, one column per T: ``|g_1| (|g_1|/|g_T|)``, and the per-word factor."""
    lines = ["| model | " + " | ".join(f"T = {T}" for T in lengths) + " | per-word factor |",
             "|---|" + "---|" * (len(lengths) + 1)]
    for name, by_length in rows.items():
        cells = [f"{v[0]:.2e} ({v[1]:.2e})" if v is not None else "n/a" for v in (by_length[T] for T in lengths)]
        factor = per_step_factor(by_length)
        cells.append(f"{factor:.3f}" if factor is not None else "n/a")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="rnn,lstm,gru,peephole,transformer", help="untrained decoders to measure")
    parser.add_argument("--lengths", default="10,20,40,80", help="caption lengths T")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="also measure a trained captioner checkpoint (repeatable)")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--attention", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=40)
    parser.add_argument("--grid", type=int, default=49, help="P, cells of the random feature grid")
    parser.add_argument("--dim", type=int, default=1280, help="D, width of the random feature grid")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    lengths = [int(t) for t in args.lengths.split(",")]
    features = torch.randn(args.batch, args.grid, args.dim, generator=torch.Generator().manual_seed(args.seed))
    rows = {}
    for cell in filter(None, args.cells.split(",")):
        decoder = untrained_decoder(cell, args.vocab, args.dim, args.hidden, args.embed, args.attention, args.heads,
                                    max(lengths), args.seed)
        rows[f"{cell} (untrained)"] = first_word_gradients(decoder, features, lengths, args.seed)
    for item in args.checkpoint:
        from mmapp.checkpoint import load_head

        name, _, path = item.partition("=")
        decoder, _, _ = load_head(path, "captioner")
        grid = torch.randn(args.batch, args.grid, decoder.cfg.encoder_dim,
                           generator=torch.Generator().manual_seed(args.seed)).abs()
        rows[f"{name} (trained)"] = first_word_gradients(decoder, grid, lengths, args.seed)
    print(markdown(rows, lengths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
