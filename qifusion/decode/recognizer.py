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

Feature windowing follows WeNet's ``forward_chunk_by_chunk``: a chunk of ``chunk_size`` output frames
reads ``(chunk_size - 1) * subsampling + right_context + 1`` fbank frames and the window advances by
``subsampling * chunk_size``; at ``input_finished`` the last, shorter chunk is decoded. So the
streaming result equals the chunk-masked offline forward (``model.encode``) with the same chunk size
and left chunks followed by the same search. :meth:`Recognizer.decode_streams` decodes many streams
at different positions in one batch (caches joined with ``StreamState.stack``).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from qifusion.decode.backend import load_for_decoding
from qifusion.decode.endpoint import EndpointConfig, SilenceTracker
from qifusion.decode.options import LM_MODES, MODES, LmOptions, check_mode
from qifusion.decode.stream import Segment, Stream, StreamResult
from qifusion.decode.streaming_search import CtcGreedyState, CtcPrefixBeamState, Hypothesis
from qifusion.decode.text import words_from_tokens
from qifusion.errors import UserError
from qifusion.models.aid import frame_evidence, pooled_posterior

__all__ = ["MODES", "Recognizer", "RecognizerConfig", "Segment", "Stream", "StreamResult"]


@dataclass
class RecognizerConfig:
    """Decoding options of a :class:`Recognizer`.

    ``mode``: partial results always come from the CTC search (greedy for ``ctc_greedy``, prefix beam
    otherwise); the final result is the best CTC hypothesis, or with ``rescore`` (``ctc_prefix_beam``)
    / ``attention_rescoring`` the CTC n-best rescored by the attention decoder over the whole
    segment's memory, or with ``attention`` an attention beam search over that memory.
    ``lm_beam`` / ``lm_rescoring``: partials and finals from the lexicon + word LM beam search
    (``lm_options``; the LM dir ``lm``, default ``<model dir>/lm``), the final n-best attention-rescored
    with ``lm_rescoring``; ``hotwords`` bias every stream (:meth:`Recognizer.create_stream` can override).
    """

    chunk_size: int = 16
    left_chunks: int = -1
    mode: str = "ctc_prefix_beam"
    rescore: bool = True
    beam_size: int = 10
    token_topk: int | None = None  # tokens per frame in the prefix beam (default beam_size)
    ctc_weight: float = 0.5  # weight of the CTC score in attention rescoring
    reverse_weight: float = 0.0  # right-to-left decoder weight in rescoring (when the model has one)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    device: str = "cpu"
    dtype: str = "float32"  # model compute dtype: float32, or float64 for exact parity checks
    backend: str = "torch"
    # intra-op threads for the torch chunk steps on CPU (None: torch's setting). One chunk of one stream
    # is a handful of small matmuls: waking a second thread costs more than it saves (per-chunk time
    # 2-thread vs 1-thread in benchmarks/speed/encoder.py --chunk-threads), so 1 is the default.
    chunk_threads: int | None = 1
    # silence / non-speech segments give an empty result (see qifusion.decode.gate); the confidence
    # threshold is the model dir's calibrated one (aid_calibration.json) unless given
    speech_gate: bool = True
    gate_min_confidence: float | None = None
    lm: str | None = None  # LM dir (LM modes; default <model dir>/lm)
    lm_options: LmOptions = field(default_factory=LmOptions)
    hotwords: tuple[Any, ...] | None = None  # qifusion.lm.files.Hotword entries

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.chunk_size <= 0:
            raise UserError(f"streaming needs a positive chunk size, got chunk_size={self.chunk_size}")
        if self.backend not in ("torch", "onnx"):
            raise UserError(f"unknown backend '{self.backend}' (choose torch or onnx)")
        if self.chunk_threads is not None and self.chunk_threads < 1:
            raise UserError(f"chunk_threads must be None or >= 1, got {self.chunk_threads}")

    @property
    def final_mode(self) -> str:
        """How the final result is chosen: ctc, attention_rescoring or attention."""
        if self.mode == "attention":
            return "attention"
        if self.mode in ("attention_rescoring", "lm_rescoring") or (
                self.mode == "ctc_prefix_beam" and self.rescore):
            return "attention_rescoring"
        return "ctc"


class Recognizer:
    """Owns the model; decodes :class:`Stream` objects (one or many per call).

    ``model`` is a ``QifusionModel`` (or a backend with the same ``init_state``/``forward_chunk``/
    ``attention_scores`` interface); ``tokenizer`` maps ids to text; ``accents`` names the accent ids.
    """

    def __init__(self, *, model: Any, tokenizer: Any, accents: list[str], config: RecognizerConfig,
                 num_mel_bins: int = 80, lm: Any = None) -> None:
        if config.mode in LM_MODES and lm is None:
            raise UserError(f"mode '{config.mode}' needs an LM (a qifusion.decode.lm_search.LexiconLm)")
        if config.hotwords and lm is None:
            raise UserError("hotwords need an LM decoding mode (lm_beam or lm_rescoring)")
        self.lm = lm  # LexiconLm (LM modes), shared by all streams
        self.model = model
        self.tokenizer = tokenizer
        self.accents = list(accents)
        self.aid_pooling: str = model.aid_pooling  # torch model and ONNX backend both have it
        self.config = config
        self.num_mel_bins = num_mel_bins
        enc = getattr(model, "encoder", model)
        self.subsampling = int(enc.subsampling_rate)
        self.right_context = int(enc.right_context)
        self.context = self.right_context + 1  # fbank frames needed for one output frame
        self.window = (config.chunk_size - 1) * self.subsampling + self.context
        self.stride = self.subsampling * config.chunk_size
        self.frame_shift = 0.01 * self.subsampling  # seconds per output frame
        self.blank_id = int(getattr(tokenizer, "blank_id", 0))
        self.keep_memory = config.final_mode != "ctc"
        self.device = torch.device(config.device)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}.get(config.dtype)
        if self.dtype is None:
            raise UserError(f"unknown dtype '{config.dtype}' (choose float32 or float64)")
        if isinstance(model, torch.nn.Module):
            model.to(device=self.device, dtype=self.dtype)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_model_dir(cls, path: str | Path, *, chunk_size: int = 16, left_chunks: int = -1,
                       mode: str = "ctc_prefix_beam", rescore: bool = True, backend: str = "torch",
                       device: str = "cpu", beam_size: int = 10, **options: Any) -> Recognizer:
        """Load a model dir (``model.pt``, ``config.yaml``, ``units.txt``, ``accents.txt``, ...).

        Extra ``options`` are :class:`RecognizerConfig` fields (``ctc_weight``, ``endpoint``, ...).
        """
        config = RecognizerConfig(chunk_size=chunk_size, left_chunks=left_chunks, mode=mode, rescore=rescore,
                                  backend=backend, device=device, beam_size=beam_size, **options)
        loaded = load_for_decoding(path, backend=backend, device=device)
        if config.gate_min_confidence is None:
            from qifusion.eval.calibration import load_calibration

            cal = load_calibration(Path(path))
            config.gate_min_confidence = cal.gate_min_confidence if cal is not None else 0.0
        num_mel_bins = int(getattr(getattr(loaded.config, "data", None), "num_mel_bins", 80))
        lm = None
        if config.mode in LM_MODES:
            from qifusion.decode.lm_search import LexiconLm
            from qifusion.lm.files import resolve_lm_dir

            lm = LexiconLm(resolve_lm_dir(path, config.lm), loaded.tokenizer, config.lm_options)
        return cls(model=loaded.model, tokenizer=loaded.tokenizer, accents=loaded.accents, config=config,
                   num_mel_bins=num_mel_bins, lm=lm)

    def create_stream(self, hotwords: tuple[Any, ...] | None = None) -> Stream:
        """A new, empty stream; ``hotwords`` (LM modes) replace the config's for this stream."""
        hw = tuple(hotwords) if hotwords else self.config.hotwords
        if hotwords and self.lm is None:
            raise UserError("hotwords need an LM decoding mode (lm_beam or lm_rescoring)")
        s = Stream(num_mel_bins=self.num_mel_bins, model_state=self._init_state(),
                   search=self._new_search(hw),
                   silence=SilenceTracker(self.config.endpoint, frame_shift=self.frame_shift))
        s.hotwords = hw
        return s

    def _init_state(self) -> Any:
        return self.model.init_state(batch_size=1)

    def _new_search(self, hotwords: tuple[Any, ...] | None = None) -> Any:
        if self.lm is not None:
            return self.lm.new_search(hotwords)
        if self.config.mode == "ctc_greedy":
            return CtcGreedyState(blank_id=self.blank_id)
        return CtcPrefixBeamState(beam_size=self.config.beam_size, token_topk=self.config.token_topk,
                                  blank_id=self.blank_id)

    # ---- readiness ----------------------------------------------------------------------------
    def _chunk_frames(self, s: Stream) -> int:
        """Fbank frames of the next chunk of ``s`` (0 = none available now)."""
        avail = s.fbank.num_frames_ready - s.next_frame
        if avail >= self.window:
            return self.window
        if s.is_input_finished and avail >= self.context:
            return avail
        return 0

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
        ``model.forward_chunk`` call with their caches stacked; the last, shorter chunks of finished
        streams are grouped by length.
        """
        groups: dict[int, list[Stream]] = defaultdict(list)
        for s in streams:
            n = self._chunk_frames(s)
            if n > 0:
                groups[n].append(s)
        for n, group in groups.items():
            self._forward_group(group, n)
        for s in streams:
            if s.is_input_finished and not s.finalized and self._chunk_frames(s) == 0:
                self._finalize(s)
            elif not s.finalized:
                s._result = self._partial_result(s)

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
        state_cls = type(group[0].model_state)
        state = group[0].model_state if len(group) == 1 else state_cls.stack([s.model_state for s in group])
        with self._chunk_threads():
            out, new_state = self.model.forward_chunk(
                feats, state, chunk_size=self.config.chunk_size, left_chunks=self.config.left_chunks
            )
        new_states = [new_state] if len(group) == 1 else new_state.unstack()
        for i, s in enumerate(group):
            s.model_state = new_states[i]
            s.next_frame += self.stride
            s.fbank.pop(min(s.next_frame, s.fbank.num_frames_ready))
            log_probs = out.ctc_log_probs[i].float().cpu()  # (T_chunk, V)
            s.search.step(log_probs)
            s.silence.update(log_probs[:, self.blank_id])
            s.evidence.update(log_probs, self.blank_id)
            if self.keep_memory:
                s.memory.append(out.memory[i].detach())
            if self.config.final_mode == "attention":
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

    def _finalize(self, s: Stream) -> None:
        """Choose the segment's final hypothesis (rescored when configured) and freeze the result."""
        from qifusion.decode.final import choose_final

        hyp = self._gated(s, choose_final(self, s))
        s.final_hyp = hyp
        s.finalized = True
        s._result = self._make_result(s, hyp, is_final=True)

    # ---- endpointing / continuous decoding ----------------------------------------------------
    def is_endpoint(self, s: Stream) -> bool:
        """True when an endpoint rule holds for the current segment of ``s`` (see endpoint.py)."""
        has_speech = len(s.search.nbest(1)[0].tokens) > 0
        return s.silence.is_endpoint(has_speech=has_speech)

    def reset(self, s: Stream) -> Segment:
        """End the current segment of ``s``: finalise it (rescoring), append it to ``s.segments`` and
        return it, then start a new segment (fresh caches and search; audio position kept)."""
        if not s.finalized:
            self._finalize(s)
        r = s.result
        seg = Segment(start=r.start, end=r.end, text=r.text, tokens=r.tokens, timestamps=r.timestamps,
                      words=r.words, accent=r.accent, accent_prob=r.accent_prob, accent_probs=r.accent_probs)
        s.segments.append(seg)
        s.frame_offset += s.silence.num_frames
        s.model_state = self._init_state()
        s.search = self._new_search(s.hotwords)
        s.silence.reset()
        s.evidence.reset()
        s.memory, s.ctc_log_probs = [], []
        s.accent_sum, s.accent_frames = None, 0
        s.finalized = False
        s.final_hyp = None
        t0 = s.frame_offset * self.frame_shift
        s._result = StreamResult(start=t0, end=t0, segments=list(s.segments))
        return seg
