"""Decoding modes, their defaults and options: defined once, imported by search, Recognizer and the CLI.

Kept free of torch imports so the command-line parser stays fast. A new decoding mode is added to
:data:`MODES` (and :attr:`DecodeOptions.final_mode`) here and to :func:`qifusion.decode.search.first_pass`
/ :func:`~qifusion.decode.search.finalize`: every caller (offline, streaming, ``decode``, ``transcribe``,
``serve``) goes through those two.

Modes: ``ctc_greedy``, ``ctc_prefix_beam``, ``attention`` (attention beam search), ``attention_rescoring``
(CTC prefix-beam n-best rescored by the attention decoder), ``lm_beam`` (CTC lexicon beam search with a
word n-gram LM, :mod:`qifusion.decode.lm_search`) and ``lm_rescoring`` (its n-best rescored by the
attention decoder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qifusion.errors import UserError
from qifusion.models.geometry import DEFAULT_CHUNK  # torch-free

MODES = ("ctc_greedy", "ctc_prefix_beam", "attention", "attention_rescoring", "lm_beam", "lm_rescoring")
LM_MODES = ("lm_beam", "lm_rescoring")
__all__ = ["DEFAULT_BEAM", "DEFAULT_CHUNK", "DEFAULT_CTC_WEIGHT", "DEFAULT_MODE", "LM_MODES", "MODES",
           "DecodeOptions", "LmOptions", "check_mode", "legacy_mode"]
DEFAULT_MODE = "attention_rescoring"
DEFAULT_BEAM = 10
DEFAULT_CTC_WEIGHT = 0.5


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


@dataclass(frozen=True)
class DecodeOptions:
    """What to search for, the same offline and streaming.

    ``mode``: one of :data:`MODES`. Streaming partial results always come from the CTC side (greedy for
    ``ctc_greedy``, prefix beam for the others, the LM beam for the LM modes); the final result is
    chosen by :attr:`final_mode`. ``beam_size``: CTC prefix beam and attention beam width;
    ``token_topk``: tokens per frame in the prefix beam (None: ``beam_size``); ``ctc_weight`` /
    ``reverse_weight``: the rescoring mix; ``lm_options`` / ``hotwords``: the LM modes.
    """

    mode: str = DEFAULT_MODE
    beam_size: int = DEFAULT_BEAM
    token_topk: int | None = None
    ctc_weight: float = DEFAULT_CTC_WEIGHT
    reverse_weight: float = 0.0
    lm_options: LmOptions = field(default_factory=LmOptions)
    hotwords: tuple[Any, ...] | None = None  # qifusion.lm.files.Hotword entries (LM modes)

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.beam_size < 1 or (self.token_topk is not None and self.token_topk < 1):
            raise UserError(f"beam_size and token_topk must be at least 1, got {self.beam_size}, "
                            f"{self.token_topk}")
        if self.hotwords and self.mode not in LM_MODES:
            raise UserError("hotwords need an LM decoding mode (lm_beam or lm_rescoring)")

    @property
    def final_mode(self) -> str:
        """How the final result is chosen: ``ctc`` (the search's best), ``attention_rescoring`` (its
        n-best rescored by the attention decoder) or ``attention`` (attention beam search)."""
        if self.mode == "attention":
            return "attention"
        if self.mode in ("attention_rescoring", "lm_rescoring"):
            return "attention_rescoring"
        return "ctc"

    @property
    def uses_lm(self) -> bool:
        return self.mode in LM_MODES


def legacy_mode(mode: str, rescore: bool) -> str:
    """The mode meant by the Recognizer's older ``(mode, rescore)`` pair: ``ctc_prefix_beam`` with
    ``rescore=True`` is ``attention_rescoring``; every other pair is ``mode`` itself."""
    return "attention_rescoring" if (rescore and mode == "ctc_prefix_beam") else mode
