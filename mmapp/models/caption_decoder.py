"""``build_caption_decoder``: the caption decoder a config asks for (``decoder.cell``).

The interface lives in ``decoder_base.py``, the variants in ``recurrent_decoder.py`` (lstm, gru,
peephole, rnn) and ``transformer_decoder.py`` (transformer).
"""

from __future__ import annotations

from mmapp.config import CaptionDecoderConfig
from mmapp.models.decoder_base import CaptionDecoder
from mmapp.models.recurrent_decoder import RecurrentAttentionDecoder
from mmapp.models.transformer_decoder import TransformerDecoder


def build_caption_decoder(cfg: CaptionDecoderConfig) -> CaptionDecoder:
    if cfg.cell == "transformer":
        return TransformerDecoder(cfg)
    return RecurrentAttentionDecoder(cfg)
