"""The final result of a stream's segment: best CTC hypothesis, attention rescoring or attention beam.

Uses the same search functions as offline decoding (:mod:`qifusion.decode.search`) on the segment's
whole decoder memory (the concatenated chunk outputs), so streaming finals equal chunk-masked offline
decoding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from qifusion.decode.streaming_search import Hypothesis

if TYPE_CHECKING:
    from qifusion.decode.recognizer import Recognizer
    from qifusion.decode.stream import Stream


def choose_final(rec: Recognizer, s: Stream) -> Hypothesis:
    """Pick the final hypothesis of the current segment of ``s`` according to ``rec.config``."""
    if hasattr(s.search, "finish"):  # the LM beam search ends its search once (n-best, end of sentence)
        s.search.finish()
    nbest = s.search.nbest(rec.config.beam_size)
    mode = rec.config.final_mode
    if mode == "ctc" or not s.memory or not _has_decoder(rec.model):
        return nbest[0]
    memory = torch.cat(s.memory, dim=0)[None]  # (1, T', D)
    lens = torch.tensor([memory.shape[1]], device=memory.device)
    from qifusion.decode import search

    if mode == "attention":
        ctc = torch.cat(s.ctc_log_probs, dim=0)[None] if s.ctc_log_probs else None
        return search.attention_beam(
            rec.model, memory, lens, beam_size=rec.config.beam_size, sos_eos_id=rec.tokenizer.sos_eos_id,
            ctc_log_probs=ctc, blank_id=rec.blank_id,
        )[0]
    if all(len(h.tokens) == 0 for h in nbest):
        return nbest[0]
    return search.attention_rescoring(
        rec.model, memory, lens, [nbest], ctc_weight=rec.config.ctc_weight,
        reverse_weight=rec.config.reverse_weight,
    )[0]


def _has_decoder(model: object) -> bool:
    return getattr(model, "decoder", None) is not None or hasattr(model, "attention_scores")
