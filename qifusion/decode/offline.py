"""Non-streaming decoding of one utterance: chunk-masked full forward + the search functions.

The reference that the streaming recognizer must equal: ``model.encode`` with the same chunk size and
left chunks, then :func:`ctc_greedy` / :func:`ctc_prefix_beam` (+ :func:`attention_rescoring` or
:func:`attention_beam`) of :mod:`qifusion.decode.search`, with the recognizer's search options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from qifusion.decode.gate import SpeechEvidence
from qifusion.decode.streaming_search import Hypothesis

if TYPE_CHECKING:
    from qifusion.decode.recognizer import Recognizer


@torch.inference_mode()
def decode_features(rec: Recognizer, feats: torch.Tensor, *, chunk_size: int, left_chunks: int,
                    accent_probs: dict[str, float] | None = None) -> tuple[Hypothesis, str | None, float]:
    """Decode fbank ``feats`` (T, F) of one utterance with ``rec``'s model, mode and search options.

    Returns (best hypothesis, accent name or None, its utterance posterior); the hypothesis is empty
    when the speech gate (``rec.config.speech_gate``, :mod:`qifusion.decode.gate`) finds no speech.
    ``accent_probs``, when given, is filled with the utterance posterior of every accent.
    """
    from qifusion.decode import search

    cfg = rec.config
    model = rec.model
    x = feats[None].to(device=rec.device, dtype=rec.dtype)
    lens = torch.tensor([feats.shape[0]], device=rec.device)
    enc = model.encode(x, lens, chunk_size=chunk_size, left_chunks=left_chunks)
    log_probs, out_lens = enc.ctc_log_probs.float(), enc.lens
    final = cfg.final_mode
    if rec.lm is not None:  # lm_beam / lm_rescoring: the streams' search run over all frames at once
        hyp = search.search_batch(model, enc, mode=cfg.mode, sos_eos_id=rec.tokenizer.sos_eos_id,
                                  ctc_weight=cfg.ctc_weight, reverse_weight=cfg.reverse_weight,
                                  blank_id=rec.blank_id, lm=rec.lm, hotwords=cfg.hotwords)[0]
    elif cfg.mode == "ctc_greedy":
        hyp = search.ctc_greedy(log_probs, out_lens, blank_id=rec.blank_id)[0]
    elif final == "attention" and getattr(model, "decoder", None) is not None:
        hyp = search.attention_beam(model, enc.memory, out_lens, beam_size=cfg.beam_size,
                                    sos_eos_id=rec.tokenizer.sos_eos_id, ctc_log_probs=log_probs,
                                    blank_id=rec.blank_id)[0]
    else:
        nbest = search.ctc_prefix_beam(log_probs, out_lens, beam_size=cfg.beam_size,
                                       token_topk=cfg.token_topk, blank_id=rec.blank_id)[0]
        hyp = nbest[0]
        if (final == "attention_rescoring" and getattr(model, "decoder", None) is not None
                and any(len(h.tokens) for h in nbest)):
            hyp = search.attention_rescoring(model, enc.memory, out_lens, [nbest], ctc_weight=cfg.ctc_weight,
                                             reverse_weight=cfg.reverse_weight)[0]
    if cfg.speech_gate:
        evidence = SpeechEvidence()
        evidence.update(log_probs[0, : int(out_lens[0])], rec.blank_id)
        if not evidence.is_speech(cfg.gate_min_confidence or 0.0):
            hyp = Hypothesis((), (), hyp.score)
    accent, prob = None, 0.0
    if enc.accent_utt is not None:
        post = enc.accent_utt[0].double()
        k = int(post.argmax())
        accent, prob = rec.accents[k], float(post[k])
        if accent_probs is not None:
            accent_probs.update({a: float(p) for a, p in zip(rec.accents, post.tolist())})
    return hyp, accent, prob
