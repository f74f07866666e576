"""Streaming recognizer with a sherpa-onnx style API.

Example::

    rec = Recognizer.from_model_dir("models/accents-en-qifusion", chunk_size=16)
    s = rec.create_stream()
    for piece in pieces:                       # any size, any sample rate
        s.accept_waveform(sample_rate, piece)
        while rec.is_ready(s):
            rec.decode(s)
        print(s.result.text, s.result.accent)  # partial text, running accent
    s.input_finished()
    while rec.is_ready(s):
        rec.decode(s)
    print(s.result.text)                       # final (attention-rescored) text

Feature windowing is the model's :class:`~qifusion.models.geometry.ChunkGeometry` (WeNet's
``forward_chunk_by_chunk``); at ``input_finished`` the last, shorter chunk is decoded. So the streaming
result equals the chunk-masked offline forward (``model.encode``) with the same chunk size and left
chunks followed by the same search (:func:`qifusion.decode.search.finalize`).
:meth:`Recognizer.decode_streams` decodes many streams at different positions in one batch (caches
joined with the state's ``stack``). The model is any :class:`~qifusion.models.protocol.DecodingModel`
(the torch model or the ONNX backend).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from qifusion.decode.backend import load_for_decoding
from qifusion.decode.endpoint import EndpointConfig, SilenceTracker
from qifusion.decode.options import DEFAULT_CHUNK, MODES, DecodeOptions, legacy_mode
from qifusion.decode.search import finalize
from qifusion.decode.stream import Segment, Stream, StreamResult
from qifusion.decode.streaming_search import CtcGreedyState, CtcPrefixBeamState, Hypothesis, StreamSearch
from qifusion.decode.text import words_from_tokens
from qifusion.errors import UserError
from qifusion.models.aid import frame_evidence, pooled_posterior
from qifusion.models.protocol import DecodingModel

__all__ = ["MODES", "DecodeOptions", "Recognizer", "RecognizerConfig", "Segment", "Stream", "StreamResult"]

_DECODE_FIELDS = {f.name for f in fields(DecodeOptions)}


@dataclass
class RecognizerConfig:
    """Settings of a :class:`Recognizer`, grouped: what to search for (``decode``), the chunk geometry
    (``chunk_size``, ``left_chunks``), endpointing, the speech gate and the runtime.

    ``decode``: :class:`~qifusion.decode.options.DecodeOptions` (mode, beams, rescoring weights, LM
    options, hotwords); ``lm``: the LM dir of the LM modes (default ``<model dir>/lm``).
    """

    chunk_size: int = DEFAULT_CHUNK
    left_chunks: int = -1
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    # silence / non-speech segments give an empty result (see qifusion.decode.gate); the confidence
    # threshold is the model dir's calibrated one (aid_calibration.json) unless given
    speech_gate: bool = True
    gate_min_confidence: float | None = None
    lm: str | None = None
    device: str = "cpu"
    dtype: str = "float32"  # model compute dtype: float32, or float64 for exact parity checks
    backend: str = "torch"
    # intra-op threads for the torch chunk steps on CPU (None: torch's setting). One chunk of one stream
    # is a handful of small matmuls: waking a second thread costs more than it saves (per-chunk time
    # 2-thread vs 1-thread in benchmarks/speed/encoder.py --chunk-threads), so 1 is the default.
    chunk_threads: int | None = 1

    def __post_init__(self) -> None:
        if self.chunk_size <= 0:
            raise UserError(f"streaming needs a positive chunk size, got chunk_size={self.chunk_size}")
        if self.backend not in ("torch", "onnx"):
            raise UserError(f"unknown backend '{self.backend}' (choose torch or onnx)")
        if self.chunk_threads is not None and self.chunk_threads < 1:
            raise UserError(f"chunk_threads must be None or >= 1, got {self.chunk_threads}")
        if self.dtype not in ("float32", "float64"):
            raise UserError(f"unknown dtype '{self.dtype}' (choose float32 or float64)")

    @classmethod
    def from_options(cls, *, mode: str, rescore: bool = False, **options: Any) -> RecognizerConfig:
        """A config from flat keyword options: :class:`DecodeOptions` fields (``beam_size``,
        ``ctc_weight``, ``lm_options``, ...) go to ``decode``, the others are config fields.
        ``rescore`` is the older switch (see :func:`~qifusion.decode.options.legacy_mode`)."""
        dec = {k: options.pop(k) for k in list(options) if k in _DECODE_FIELDS}
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise UserError(f"unknown recognizer option(s): {', '.join(unknown)}")
        return cls(decode=DecodeOptions(mode=legacy_mode(mode, rescore), **dec), **options)


class Recognizer:
    """Owns the model; decodes :class:`Stream` objects (one or many per call).

    ``model`` is a :class:`~qifusion.models.protocol.DecodingModel` (torch or ONNX); ``tokenizer`` maps
    ids to text; ``accents`` names the accent ids; ``lm`` is the LM of the LM modes.
    """

    def __init__(self, *, model: DecodingModel, tokenizer: Any, accents: list[str], config: RecognizerConfig,
                 num_mel_bins: int = 80, lm: Any = None) -> None:
        opts = config.decode
        if opts.uses_lm and lm is None:
            raise UserError(f"mode '{opts.mode}' needs an LM (a qifusion.decode.lm_search.LexiconLm)")
        self.lm = lm  # LexiconLm (LM modes), shared by all streams
        self.model = model
        self.tokenizer = tokenizer
        self.accents = list(accents)
        self.aid_pooling: str = model.aid_pooling
        self.config = config
        self.options = opts
        self.num_mel_bins = num_mel_bins
        self.geometry = model.chunk_geometry(config.chunk_size, config.left_chunks)
        self.frame_shift = self.geometry.frame_shift  # seconds per output frame
        self.blank_id = int(tokenizer.blank_id)
        self.keep_memory = opts.final_mode != "ctc"
        self.device = torch.device(config.device)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[config.dtype]
        if isinstance(model, torch.nn.Module):
            model.to(device=self.device, dtype=self.dtype)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_model_dir(cls, path: str | Path, *, chunk_size: int = DEFAULT_CHUNK, left_chunks: int = -1,
                       mode: str = "ctc_prefix_beam", rescore: bool = True, backend: str = "torch",
                       device: str = "cpu", **options: Any) -> Recognizer:
        """Load a model dir (``model.pt``, ``config.yaml``, ``units.txt``, ``accents.txt``, ...).

        ``mode="ctc_prefix_beam"`` with ``rescore=True`` (the defaults) is ``attention_rescoring``
        (:func:`~qifusion.decode.options.legacy_mode`). Extra ``options`` are :class:`DecodeOptions`
        fields (``beam_size``, ``ctc_weight``, ``lm_options``, ``hotwords``, ...) or
        :class:`RecognizerConfig` fields (``endpoint``, ``dtype``, ``lm``, ...).
        """
        config = RecognizerConfig.from_options(mode=mode, rescore=rescore, chunk_size=chunk_size,
                                               left_chunks=left_chunks, backend=backend, device=device,
                                               **options)
        loaded = load_for_decoding(path, backend=backend, device=device)
        if config.gate_min_confidence is None:
            from qifusion.eval.calibration import load_calibration

            cal = load_calibration(Path(path))
            config.gate_min_confidence = cal.gate_min_confidence if cal is not None else 0.0
        lm = None
        if config.decode.uses_lm:
            from qifusion.decode.lm_search import LexiconLm
            from qifusion.lm.files import resolve_lm_dir

            lm = LexiconLm(resolve_lm_dir(path, config.lm), loaded.tokenizer, config.decode.lm_options)
        return cls(model=loaded.model, tokenizer=loaded.tokenizer, accents=loaded.accents, config=config,
                   num_mel_bins=loaded.config.data.num_mel_bins, lm=lm)

    def create_stream(self, hotwords: tuple[Any, ...] | None = None) -> Stream:
        """A new, empty stream; ``hotwords`` (LM modes) replace the options' for this stream."""
        if hotwords and self.lm is None:
            raise UserError("hotwords need an LM decoding mode (lm_beam or lm_rescoring)")
        hw = tuple(hotwords) if hotwords else self.options.hotwords
        return Stream(num_mel_bins=self.num_mel_bins, model_state=self.model.init_state(1),
                      search=self._new_search(hw), partial=self._partial_result, hotwords=hw,
                      silence=SilenceTracker(self.config.endpoint, frame_shift=self.frame_shift))

    def _new_search(self, hotwords: tuple[Any, ...] | None = None) -> StreamSearch:
        if self.lm is not None:
            return self.lm.new_search(hotwords)
        if self.options.mode == "ctc_greedy":
            return CtcGreedyState(blank_id=self.blank_id)
        return CtcPrefixBeamState(beam_size=self.options.beam_size, token_topk=self.options.token_topk,
                                  blank_id=self.blank_id)

    # ---- readiness ----------------------------------------------------------------------------
    def _chunk_frames(self, s: Stream) -> int:
        """Fbank frames of the next chunk of ``s`` (0 = none available now)."""
        return self.geometry.next_chunk(s.fbank.num_frames_ready - s.next_frame, finished=s.is_input_finished)

    def is_ready(self, s: Stream) -> bool:
        """True when ``decode(s)`` has work: a full chunk, or the tail/finalisation after input_finished."""
        return self._chunk_frames(s) > 0 or (s.is_input_finished and not s.finalized)

    # ---- decoding -----------------------------------------------------------------------------
    def decode(self, s: Stream) -> None:
        """Decode one chunk of ``s`` (and finalise it when its input is finished and consumed)."""
        self.decode_streams([s])

    @torch.inference_mode()
    def decode_streams(self, streams: list[Stream]) -> None:
        """Decode one chunk of every ready stream in ``streams``, batched.

        Streams whose next chunk has the same number of fbank frames (all full chunks) run in one
        ``model.step`` call with their caches stacked; the last, shorter chunks of finished streams are
        grouped by length.
        """
        groups: dict[int, list[Stream]] = defaultdict(list)
        for s in streams:
            n = self._chunk_frames(s)
            if n > 0:
                groups[n].append(s)
        for n, group in groups.items():
            self._forward_group(group, n)
        done = [s for s in streams if s.is_input_finished and not s.finalized and self._chunk_frames(s) == 0]
        if done:
            self._finalize(done)

    @contextlib.contextmanager
    def _chunk_threads(self) -> Iterator[None]:
        """Run the block with ``config.chunk_threads`` intra-op threads (torch on CPU only)."""
        n = self.config.chunk_threads
        old = torch.get_num_threads()
        if n is None or self.config.backend != "torch" or self.device.type != "cpu" or n == old:
            yield
            return
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    def _forward_group(self, group: list[Stream], num_frames: int) -> None:
        feats = torch.stack([s.fbank.get_frames(s.next_frame, num_frames) for s in group])
        feats = feats.to(device=self.device, dtype=self.dtype)  # (B, T_in, F)
        states = [s.model_state for s in group]
        state = states[0] if len(group) == 1 else type(states[0]).stack(states)
        with self._chunk_threads():
            out, new_state = self.model.step(feats, state, self.geometry)
        new_states = [new_state] if len(group) == 1 else new_state.unstack()
        all_log_probs = out.ctc_log_probs.float().cpu()  # (B, T_chunk, V)
        searches = [s.search for s in group]
        together = len(group) > 1 and all(type(x) is CtcPrefixBeamState for x in searches)
        if together:  # one vectorised prefix-beam update for the whole batch (same hypotheses)
            CtcPrefixBeamState.step_together(searches, all_log_probs)  # type: ignore[arg-type]
        for i, s in enumerate(group):
            s.model_state = new_states[i]
            s.next_frame += self.geometry.stride
            s.fbank.pop(min(s.next_frame, s.fbank.num_frames_ready))
            log_probs = all_log_probs[i]  # (T_chunk, V)
            if not together:
                s.search.step(log_probs)
            s.silence.update(log_probs[:, self.blank_id])
            s.evidence.update(log_probs, self.blank_id)
            if self.keep_memory:
                s.memory.append(out.memory[i].detach())
            if self.options.final_mode == "attention":
                s.ctc_log_probs.append(log_probs)
            if out.accent_post is not None and out.accent_post.shape[1] > 0:
                post = frame_evidence(out.accent_post[i].double().cpu(), self.aid_pooling).sum(dim=0)  # (A,)
                s.accent_sum = post if s.accent_sum is None else s.accent_sum + post
                s.accent_frames += out.accent_post.shape[1]

    # ---- results ------------------------------------------------------------------------------
    def _accent(self, s: Stream) -> tuple[str | None, float, dict[str, float]]:
        if s.accent_sum is None or s.accent_frames == 0:
            return None, 0.0, {}
        mean = pooled_posterior(s.accent_sum, torch.tensor(s.accent_frames), self.aid_pooling)
        k = int(mean.argmax())
        probs = {a: float(p) for a, p in zip(self.accents, mean.tolist())}
        return (self.accents[k] if k < len(self.accents) else str(k)), float(mean[k]), probs

    def _make_result(self, s: Stream, hyp: Hypothesis, *, is_final: bool) -> StreamResult:
        ids = list(hyp.tokens)
        tokens = [self.tokenizer.id2token(i) for i in ids]
        times = [(s.frame_offset + t) * self.frame_shift for t in hyp.times]
        accent, prob, probs = self._accent(s)
        start = s.frame_offset * self.frame_shift
        return StreamResult(
            text=self.tokenizer.decode(ids), tokens=tokens, token_ids=ids, timestamps=times,
            words=words_from_tokens(tokens, times, frame_shift=self.frame_shift),
            accent=accent, accent_prob=prob, accent_probs=probs, is_final=is_final,
            start=start, end=start + s.silence.num_frames * self.frame_shift, segments=list(s.segments),
        )

    def _gated(self, s: Stream, hyp: Hypothesis) -> Hypothesis:
        """``hyp``, or an empty hypothesis when the speech gate says the segment is not speech."""
        if self.config.speech_gate and not s.evidence.is_speech(self.config.gate_min_confidence or 0.0):
            return Hypothesis((), (), hyp.score)
        return hyp

    def _partial_result(self, s: Stream) -> StreamResult:
        return self._make_result(s, self._gated(s, s.search.nbest(1)[0]), is_final=False)

    def _finalize(self, streams: list[Stream]) -> None:
        """Choose the segments' final hypotheses (:func:`~qifusion.decode.search.finalize`, one batch
        for all ``streams``: their decoder memories padded) and freeze the results."""
        nbests = []
        for s in streams:
            s.search.finish()  # the LM beam search ends its search once (n-best, end of sentence)
            nbests.append(s.search.nbest(self.options.beam_size))
        hyps = [nb[0] for nb in nbests]
        todo = [i for i, s in enumerate(streams) if s.memory]
        if todo:
            pad = torch.nn.utils.rnn.pad_sequence
            memory = pad([torch.cat(streams[i].memory, dim=0) for i in todo], batch_first=True)  # (B, T', D)
            lens = torch.tensor([sum(m.shape[0] for m in streams[i].memory) for i in todo],
                                device=memory.device)
            ctc = None
            if self.options.final_mode == "attention":
                ctc = pad([torch.cat(streams[i].ctc_log_probs, dim=0) for i in todo], batch_first=True)
            final = finalize(self.model, [nbests[i] for i in todo], memory, lens, self.options,
                             sos_eos_id=self.tokenizer.sos_eos_id, blank_id=self.blank_id, ctc_log_probs=ctc)
            for i, h in zip(todo, final):
                hyps[i] = h
        for s, h in zip(streams, hyps):
            h = self._gated(s, h)
            s.finish_segment(h, self._make_result(s, h, is_final=True))

    # ---- endpointing / continuous decoding ----------------------------------------------------
    def is_endpoint(self, s: Stream) -> bool:
        """True when an endpoint rule holds for the current segment of ``s`` (see endpoint.py)."""
        has_speech = len(s.search.nbest(1)[0].tokens) > 0
        return s.silence.is_endpoint(has_speech=has_speech)

    def reset(self, s: Stream) -> Segment:
        """End the current segment of ``s``: finalise it (rescoring), append it to ``s.segments`` and
        return it, then start a new segment (fresh caches and search; audio position kept)."""
        if not s.finalized:
            self._finalize([s])
        r = s.result
        seg = Segment(start=r.start, end=r.end, text=r.text, tokens=r.tokens, timestamps=r.timestamps,
                      words=r.words, accent=r.accent, accent_prob=r.accent_prob, accent_probs=r.accent_probs)
        s.segments.append(seg)
        s.start_segment(self.model.init_state(1), self._new_search(s.hotwords))
        return seg
