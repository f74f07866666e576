"""CTC lexicon beam search with a word n-gram LM and hotwords (flashlight-text ``LexiconDecoder``).

:class:`LexiconLm` loads an LM dir once (KenLM model, lexicon trie) and makes one
:class:`LmBeamState` per stream; the state is fed CTC log-probabilities chunk by chunk
(``decode_step``), gives the best partial hypothesis at any time and, after :meth:`LmBeamState.finish`
(``decode_end``), the final n-best. Offline decoding (:func:`lm_beam`) feeds all frames at once
through the same state, so streaming finals equal chunk-masked offline decoding.

Words: only lexicon words can be output (the LM's vocabulary). Out-of-vocabulary words come out as
in-vocabulary words that sound alike; to make a new word reachable, add it to the LM text or pass it
as a hotword (a hotword not in the lexicon is spelled from its characters and scored as the LM's
``<unk>`` plus its boost). A hotword's boost is added to the hypothesis score (not scaled by
``lm_weight``) for each occurrence of each of its words (phrases: every word of the phrase gets the
boost), and to the lexicon look-ahead, so the word also survives pruning. Too large a boost makes
the word inserted where it was not said. Only character-unit models with a word-boundary unit
(``▁``) are supported.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qifusion.data.tokenizer import SPACE
from qifusion.decode.hypothesis import Hypothesis
from qifusion.decode.options import LmOptions
from qifusion.errors import UserError
from qifusion.lm.files import LEXICON_FILE, LM_FILE, Hotword, check_lm_file, read_lexicon, spell

__all__ = ["LexiconLm", "LmBeamState", "lm_beam"]


def _flashlight() -> Any:
    try:
        from flashlight.lib.text import decoder
    except ImportError as e:  # pragma: no cover - the dependency is in pyproject
        raise UserError(f"LM decoding needs flashlight-text: pip install flashlight-text ({e})") from e
    return decoder


class LexiconLm:
    """An LM dir loaded for decoding with a tokenizer's units.

    Args:
        lm_dir: holds ``lm.bin`` (or ``lm.arpa``) and ``lexicon.txt``.
        tokenizer: the model's tokenizer (char units with ``▁``).
        options: search options (:class:`~qifusion.decode.options.LmOptions`).
    """

    def __init__(self, lm_dir: str | Path, tokenizer: Any, options: LmOptions | None = None) -> None:
        dec = _flashlight()
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        self.lm_dir = Path(lm_dir)
        self.options = options or LmOptions()
        if tokenizer.token_type != "char":
            raise UserError("LM decoding supports character-unit models only (this model uses BPE units)")
        self.units = [tokenizer.id2token(i) for i in range(tokenizer.vocab_size)]
        if SPACE not in self.units:
            raise UserError(f"LM decoding needs the word-boundary unit {SPACE!r} among the model's units")
        self.unit_ids = {u: i for i, u in enumerate(self.units)}
        self.sil_id = self.unit_ids[SPACE]
        self.blank_id = int(tokenizer.blank_id)
        lm_file = self.lm_dir / LM_FILE
        if not lm_file.is_file() and (self.lm_dir / "lm.arpa").is_file():
            lm_file = self.lm_dir / "lm.arpa"
        check_lm_file(lm_file)
        self.lexicon = read_lexicon(self.lm_dir / LEXICON_FILE, self.units)
        self.words = [*self.lexicon, "<unk>"]
        self.word_ids = {w: i for i, w in enumerate(self.words)}
        self.unk_id = self.word_ids["<unk>"]
        self._dict = Dictionary(self.words)
        try:
            self.kenlm = KenLM(str(lm_file), self._dict)
        except Exception as e:  # KenLM's own exception types are not exported
            raise UserError(f"LM file {lm_file} could not be loaded ({type(e).__name__}: {e})") from None
        self._dec = dec
        self._unigram = self._unigram_scores()
        self._base_trie = self._make_trie({})

    def _unigram_scores(self) -> list[float]:
        start = self.kenlm.start(False)
        return [float(self.kenlm.score(start, i)[1]) for i in range(len(self.words))]

    def _make_trie(self, extra: dict[str, tuple[list[str], float]]) -> Any:
        """Lexicon trie; ``extra``: word -> (spelling, look-ahead bonus) for hotwords."""
        trie = self._dec.Trie(len(self.units), self.sil_id)
        for w, sp in self.lexicon.items():
            i = self.word_ids[w]
            bonus = extra[w][1] if w in extra else 0.0
            trie.insert([self.unit_ids[u] for u in sp], i, self._unigram[i] + bonus)
        new = sorted(w for w in extra if w not in self.lexicon)  # ids after the lexicon's, in this order
        unk = self._unigram[self.unk_id]
        for k, w in enumerate(new):
            sp, bonus = extra[w]
            trie.insert([self.unit_ids[u] for u in sp], len(self.words) + k, unk + bonus)
        trie.smear(self._dec.SmearingMode.MAX)
        return trie

    def hotword_table(
        self, hotwords: tuple[Hotword, ...]
    ) -> tuple[dict[str, tuple[list[str], float]], list[str]]:
        """Per-word (spelling, LM bonus = boost / lm_weight) of ``hotwords``; the words not in the lexicon."""
        units = set(self.unit_ids) - {SPACE}
        table: dict[str, tuple[list[str], float]] = {}
        scale = 1.0 / max(self.options.lm_weight, 1e-3)  # flashlight multiplies LM scores by lm_weight
        for hw in hotwords:
            for w in hw.text.split(" "):
                sp = spell(w, units)
                if sp is None:
                    raise UserError(f"hotword {hw.text!r}: {w!r} has a character that is not a unit "
                                    "of the model")
                table[w] = (sp, max(hw.boost * scale, table.get(w, ([], 0.0))[1]))
        return table, sorted(w for w in table if w not in self.lexicon)

    def new_search(self, hotwords: tuple[Hotword, ...] | None = None) -> LmBeamState:
        """A fresh search (one stream or utterance), biased towards ``hotwords`` when given."""
        if not hotwords:
            return LmBeamState(self, self._base_trie, self.kenlm, self.words)
        trie, lm, words = self._biased(tuple(hotwords))
        return LmBeamState(self, trie, lm, words)

    @lru_cache(maxsize=16)  # noqa: B019 - one LexiconLm lives as long as its recognizer
    def _biased(self, hotwords: tuple[Hotword, ...]) -> tuple[Any, Any, list[str]]:
        table, new = self.hotword_table(hotwords)
        words = self.words + new
        boosts = {self.word_ids.get(w, len(self.words) + (new.index(w) if w in new else 0)): b
                  for w, (_, b) in table.items()}
        return self._make_trie(table), _BoostedLm(self._dec.LM, self.kenlm, boosts, len(self.words),
                                                  self.unk_id), words

    def decoder(self, trie: Any, lm: Any) -> Any:
        """A flashlight ``LexiconDecoder`` over ``trie`` and ``lm`` with this LM's options."""
        o = self.options
        opts = self._dec.LexiconDecoderOptions(
            beam_size=o.beam_size, beam_size_token=o.beam_size_token or len(self.units),
            beam_threshold=o.beam_threshold, lm_weight=o.lm_weight, word_score=o.word_score,
            unk_score=float("-inf"), sil_score=0.0, log_add=False, criterion_type=self._dec.CriterionType.CTC)
        return self._dec.LexiconDecoder(opts, trie, lm, self.sil_id, self.blank_id, self.unk_id, [], False)


def _BoostedLm(base: type, kenlm: Any, boosts: dict[int, float], n_words: int, unk_id: int) -> Any:  # noqa: N802
    """A flashlight LM that adds ``boosts[word]`` to KenLM's score; ids >= ``n_words`` score as ``<unk>``."""

    class BoostedLm(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def start(self, start_with_nothing: bool) -> Any:
            return kenlm.start(start_with_nothing)

        def score(self, state: Any, word: int) -> tuple[Any, float]:
            new, sc = kenlm.score(state, word if word < n_words else unk_id)
            return new, sc + boosts.get(word, 0.0)

        def finish(self, state: Any) -> tuple[Any, float]:
            return kenlm.finish(state)

    return BoostedLm()


class LmBeamState:
    """Incremental lexicon/LM beam search of one stream (made by :meth:`LexiconLm.new_search`)."""

    def __init__(self, lm: LexiconLm, trie: Any, fl_lm: Any, words: list[str]) -> None:
        self._lm = lm
        self._keep = (trie, fl_lm)  # the decoder refers to both
        self._words = words
        self._decoder = lm.decoder(trie, fl_lm)
        self._decoder.decode_begin()
        self.num_frames = 0
        self._final: list[Hypothesis] | None = None

    def step(self, log_probs: torch.Tensor) -> None:
        """Consume new frames, ``log_probs`` (T', V) (CTC log-probabilities, any float dtype)."""
        if self._final is not None:
            raise RuntimeError("step() after finish()")
        if log_probs.shape[0] == 0:
            return
        x = np.ascontiguousarray(log_probs.detach().cpu().numpy(), dtype=np.float32)
        self._decoder.decode_step(x.ctypes.data, x.shape[0], x.shape[1])
        self.num_frames += x.shape[0]

    def finish(self) -> None:
        """No more frames: end the search (idempotent); :meth:`nbest` then gives the final n-best."""
        if self._final is not None:
            return
        self._decoder.decode_end()
        seen: set[tuple[int, ...]] = set()
        out = []
        for r in self._decoder.get_all_final_hypothesis():
            h = self._to_hyp(r)
            if h.tokens not in seen:
                seen.add(h.tokens)
                out.append(h)
        out.sort(key=lambda h: -h.score)
        self._final = out[: self._lm.options.nbest] or [Hypothesis((), (), 0.0)]

    def nbest(self, n: int | None = None) -> list[Hypothesis]:
        """The final n-best after :meth:`finish` (at most ``n``), else the best partial hypothesis."""
        if self._final is not None:
            return self._final[: n or len(self._final)]
        if self.num_frames == 0:
            return [Hypothesis((), (), 0.0)]
        return [self._to_hyp(self._decoder.get_best_hypothesis())]

    def _to_hyp(self, r: Any) -> Hypothesis:
        """Units (with ``▁`` between words) and their frames from a flashlight result.

        ``r.tokens``/``r.words`` have one entry per frame plus one before and after; ``r.words`` holds
        a word id at the frame where the word ends. Each word is output with its lexicon spelling (the
        path's letters only give the frames: a repeated letter of the path can be one or two letters of
        the word, so counting letters could split words wrongly); a letter's frame is its first frame in
        the word's span of the path. A trailing unfinished word (partials) is kept as its letters.
        """
        lm, path, ends = self._lm, list(r.tokens)[1:-1], list(r.words)[1:-1]
        letters: list[tuple[int, int]] = []
        prev = -1
        for t, u in enumerate(path):
            if u not in (lm.blank_id, lm.sil_id) and u != prev:
                letters.append((u, t))
            prev = u
        tokens: list[int] = []
        times: list[int] = []

        def emit(units: list[int], span: list[tuple[int, int]]) -> None:
            last = times[-1] if times else 0
            if tokens:
                tokens.append(lm.sil_id)
                times.append(span[0][1] if span else last)
            for k, u in enumerate(units):
                tokens.append(u)
                times.append(span[min(k, len(span) - 1)][1] if span else last)

        pos = 0
        for t, w in enumerate(ends):
            if w < 0:
                continue
            span = []
            while pos < len(letters) and letters[pos][1] <= t:
                span.append(letters[pos])
                pos += 1
            word = self._words[w]
            spelling = lm.lexicon.get(word) or list(word)
            units = [lm.unit_ids[u] for u in spelling if u in lm.unit_ids] or [u for u, _ in span]
            emit(units, span)
        if pos < len(letters):
            emit([u for u, _ in letters[pos:]], letters[pos:])
        return Hypothesis(tuple(tokens), tuple(times), float(r.score))


def lm_beam(log_probs: torch.Tensor, lens: torch.Tensor, lm: LexiconLm,
            hotwords: tuple[Hotword, ...] | None = None) -> list[list[Hypothesis]]:
    """Final n-best per utterance: ``log_probs`` (B, T', V), ``lens`` (B,)."""
    out = []
    for b in range(log_probs.shape[0]):
        s = lm.new_search(hotwords)
        s.step(log_probs[b, : int(lens[b])].float())
        s.finish()
        out.append(s.nbest())
    return out
