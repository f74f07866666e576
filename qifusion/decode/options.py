"""Decoding modes and the LM search options: defined once, imported by search, Recognizer and the CLI.

Kept free of torch imports so the command-line parser stays fast.

Modes: ``ctc_greedy``, ``ctc_prefix_beam``, ``attention`` (attention beam search), ``attention_rescoring``
(CTC prefix-beam n-best rescored by the attention decoder), ``lm_beam`` (CTC lexicon beam search with a
word n-gram LM, :mod:`qifusion.decode.lm_search`) and ``lm_rescoring`` (its n-best rescored by the
attention decoder).
"""

from __future__ import annotations

from dataclasses import dataclass

from qifusion.errors import UserError

MODES = ("ctc_greedy", "ctc_prefix_beam", "attention", "attention_rescoring", "lm_beam", "lm_rescoring")
LM_MODES = ("lm_beam", "lm_rescoring")


@dataclass(frozen=True)
class LmOptions:
    """Options of the lexicon + LM beam search (flashlight-text ``LexiconDecoder``).

    The score of a hypothesis is ``CTC log-prob + lm_weight * LM log-prob (natural log) + word_score *
    words``. ``lm_weight``, ``word_score`` and ``beam_size`` defaults were tuned on the benchmark *dev*
    split for the shipped qifusion model with a 4-gram LM of the training text (``benchmarks/lm/tune.py``,
    ``benchmarks/results/lm_tune_dev*.json``). ``beam_threshold``: hypotheses this far below the best
    are pruned.
    ``nbest``: hypotheses handed to attention rescoring (``lm_rescoring``).
    """

    lm_weight: float = 1.6
    word_score: float = -1.0
    beam_size: int = 200
    beam_size_token: int | None = None  # tokens tried per frame (None: all units)
    beam_threshold: float = 25.0
    nbest: int = 10

    def __post_init__(self) -> None:
        if not (0.0 <= self.lm_weight <= 20.0):
            raise UserError(f"lm_weight must be in [0, 20], got {self.lm_weight}")
        if not (-50.0 <= self.word_score <= 50.0):
            raise UserError(f"word_score must be in [-50, 50], got {self.word_score}")
        token = self.beam_size_token
        if self.beam_size < 1 or self.nbest < 1 or (token is not None and token < 1):
            raise UserError("LM beam sizes (beam_size, beam_size_token, nbest) must be at least 1")
        if self.beam_threshold <= 0:
            raise UserError(f"beam_threshold must be positive, got {self.beam_threshold}")


def check_mode(mode: str) -> None:
    """Raise :class:`UserError` for an unknown decoding mode."""
    if mode not in MODES:
        raise UserError(f"unknown decoding mode '{mode}' (choose from {', '.join(MODES)})")
