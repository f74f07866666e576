"""Search entry points over an encoded batch; the algorithms live in small modules:

* :mod:`qifusion.decode.ctc_search`: :func:`ctc_greedy`, :func:`ctc_prefix_beam` (vectorised),
* :mod:`qifusion.decode.attention_search`: :func:`attention_beam`, :func:`attention_rescoring`,
* :mod:`qifusion.decode.lm_search`: :func:`lm_beam` (lexicon + word LM, flashlight-text).

:func:`search_batch` runs one decoding mode on a :class:`~qifusion.models.model.EncodeResult`.
"""

from __future__ import annotations

from typing import Any

from qifusion.decode.attention_search import attention_beam, attention_rescoring
from qifusion.decode.ctc_search import ctc_greedy, ctc_prefix_beam
from qifusion.decode.options import LM_MODES, MODES, check_mode
from qifusion.decode.streaming_search import Hypothesis
from qifusion.errors import UserError

__all__ = [
    "LM_MODES",
    "MODES",
    "Hypothesis",
    "attention_beam",
    "attention_rescoring",
    "ctc_greedy",
    "ctc_prefix_beam",
    "search_batch",
]


def search_batch(
    model: Any,
    enc: Any,
    *,
    mode: str,
    beam_size: int = 10,
    sos_eos_id: int,
    ctc_weight: float = 0.5,
    reverse_weight: float = 0.0,
    blank_id: int = 0,
    lm: Any = None,
    hotwords: tuple[Any, ...] | None = None,
) -> list[Hypothesis]:
    """Best hypothesis per utterance of ``enc`` (``ctc_log_probs`` (B,T',V), ``memory``, ``lens``).

    ``lm``: a :class:`~qifusion.decode.lm_search.LexiconLm` (LM modes only); ``hotwords`` bias it.
    """
    check_mode(mode)
    lp, lens = enc.ctc_log_probs.float(), enc.lens
    if mode in LM_MODES:
        from qifusion.decode.lm_search import lm_beam

        if lm is None:
            raise UserError(f"mode '{mode}' needs an LM (build one with 'qifusion lm')")
        lm_nbest = lm_beam(lp, lens, lm, hotwords)
        if mode == "lm_beam":
            return [hs[0] for hs in lm_nbest]
        return attention_rescoring(model, enc.memory, lens, lm_nbest, ctc_weight=ctc_weight,
                                   reverse_weight=reverse_weight)
    if mode == "ctc_greedy":
        return ctc_greedy(lp, lens, blank_id=blank_id)
    if mode == "attention":
        return attention_beam(model, enc.memory, lens, beam_size=beam_size, sos_eos_id=sos_eos_id,
                              ctc_log_probs=lp, blank_id=blank_id)
    nbest = ctc_prefix_beam(lp, lens, beam_size=beam_size, blank_id=blank_id)
    if mode == "ctc_prefix_beam":
        return [hs[0] for hs in nbest]
    return attention_rescoring(model, enc.memory, lens, nbest, ctc_weight=ctc_weight,
                               reverse_weight=reverse_weight)
