"""Non-streaming decoding of one utterance: chunk-masked full forward + the search functions.

The reference that the streaming recognizer must equal: ``model.encode`` with the same chunk size and
left chunks, then :func:`qifusion.decode.search.search_batch` with the recognizer's decode options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from qifusion.decode.gate import SpeechEvidence
from qifusion.decode.hypothesis import Hypothesis
from qifusion.decode.search import search_batch

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
    cfg = rec.config
    x = feats[None].to(device=rec.device, dtype=rec.dtype)
    lens = torch.tensor([feats.shape[0]], device=rec.device)
    enc = rec.model.encode(x, lens, chunk_size=chunk_size, left_chunks=left_chunks)
    log_probs, out_lens = enc.ctc_log_probs.float(), enc.lens
    hyp = search_batch(rec.model, enc, rec.options, sos_eos_id=rec.tokenizer.sos_eos_id,
                       blank_id=rec.blank_id, lm=rec.lm)[0]
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
