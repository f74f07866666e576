"""The decoding dispatcher: every mode is run here, offline and streaming alike.

* :func:`first_pass`: the CTC-side n-best of a mode over whole utterances (greedy, prefix beam, LM beam);
  streaming runs the same searches chunk by chunk (:mod:`qifusion.decode.streaming_search`,
  :class:`~qifusion.decode.lm_search.LmBeamState`);
* :func:`finalize`: the final hypothesis from that n-best and the decoder memory, by
  :attr:`~qifusion.decode.options.DecodeOptions.final_mode` (best CTC, attention rescoring or
  attention beam search). The streaming Recognizer calls it at the end of each segment;
* :func:`search_batch`: both over an :class:`~qifusion.models.protocol.EncodeResult`.

The algorithms live in small modules: :mod:`~qifusion.decode.ctc_search` (:func:`ctc_greedy`,
:func:`ctc_prefix_beam`), :mod:`~qifusion.decode.attention_search` (:func:`attention_beam`,
:func:`attention_rescoring`) and :mod:`~qifusion.decode.lm_search` (:func:`lm_beam`).
"""

from __future__ import annotations

from typing import Any

import torch

from qifusion.decode.attention_search import attention_beam, attention_rescoring
from qifusion.decode.ctc_search import ctc_greedy, ctc_prefix_beam
from qifusion.decode.hypothesis import Hypothesis
from qifusion.decode.options import LM_MODES, MODES, DecodeOptions
from qifusion.errors import UserError
from qifusion.models.protocol import DecodingModel, EncodeResult

__all__ = [
    "LM_MODES",
    "MODES",
    "Hypothesis",
    "attention_beam",
    "attention_rescoring",
    "ctc_greedy",
    "ctc_prefix_beam",
    "finalize",
    "first_pass",
    "search_batch",
]


def first_pass(log_probs: torch.Tensor, lens: torch.Tensor, options: DecodeOptions, *, blank_id: int = 0,
               lm: Any = None) -> list[list[Hypothesis]]:
    """The CTC-side n-best of every utterance of ``log_probs`` (B, T', V), ``lens`` (B,), best first.

    ``lm``: a :class:`~qifusion.decode.lm_search.LexiconLm` (LM modes only).
    """
    if options.uses_lm:
        from qifusion.decode.lm_search import lm_beam

        if lm is None:
            raise UserError(f"mode '{options.mode}' needs an LM (build one with 'qifusion lm')")
        return lm_beam(log_probs, lens, lm, options.hotwords)
    if options.mode == "ctc_greedy":
        return [[h] for h in ctc_greedy(log_probs, lens, blank_id=blank_id)]
    return ctc_prefix_beam(log_probs, lens, beam_size=options.beam_size, token_topk=options.token_topk,
                           blank_id=blank_id)


def finalize(model: DecodingModel, nbest: list[list[Hypothesis]], memory: torch.Tensor, lens: torch.Tensor,
             options: DecodeOptions, *, sos_eos_id: int, blank_id: int = 0,
             ctc_log_probs: torch.Tensor | None = None) -> list[Hypothesis]:
    """The final hypothesis of each utterance by ``options.final_mode``.

    ``nbest[b]``: the CTC-side hypotheses of utterance b (from :func:`first_pass` or a streaming
    search; may be empty only for ``attention``); memory (B, T', D), lens (B,) its decoder input;
    ``ctc_log_probs`` (B, T', V) give the attention beam's token times. Models without an attention
    decoder, and n-best lists without any token, give the CTC best.
    """
    final = options.final_mode
    if final == "attention" and model.has_decoder:
        return attention_beam(model, memory, lens, beam_size=options.beam_size, sos_eos_id=sos_eos_id,
                              ctc_log_probs=ctc_log_probs, blank_id=blank_id)
    best = [hs[0] for hs in nbest]
    if final == "ctc" or not model.has_decoder:
        return best
    todo = [b for b, hs in enumerate(nbest) if any(len(h.tokens) for h in hs)]
    if todo:
        idx = torch.tensor(todo, device=memory.device)
        rescored = attention_rescoring(model, memory[idx], lens[idx], [nbest[b] for b in todo],
                                       ctc_weight=options.ctc_weight, reverse_weight=options.reverse_weight)
        for b, h in zip(todo, rescored):
            best[b] = h
    return best


def search_batch(model: DecodingModel, enc: EncodeResult, options: DecodeOptions, *, sos_eos_id: int,
                 blank_id: int = 0, lm: Any = None) -> list[Hypothesis]:
    """Best hypothesis per utterance of ``enc`` (``ctc_log_probs`` (B,T',V), ``memory``, ``lens``)."""
    lp, lens = enc.ctc_log_probs.float(), enc.lens
    nbest: list[list[Hypothesis]] = []
    if not (options.final_mode == "attention" and model.has_decoder):
        nbest = first_pass(lp, lens, options, blank_id=blank_id, lm=lm)
    return finalize(model, nbest, enc.memory, lens, options, sos_eos_id=sos_eos_id, blank_id=blank_id,
                    ctc_log_probs=lp)
