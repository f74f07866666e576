"""ONNX-runtime backend: :class:`~qifusion.models.protocol.DecodingModel` run by onnxruntime.

``load_onnx_model(path)`` reads an export dir written by ``qifusion export`` (``path/export.json``), or a
model dir whose export lives in ``path/onnx``. The returned ``model`` implements the same protocol as
the torch model (``chunk_geometry``, ``init_state``, ``step``, ``encode`` chunk by chunk and, when a
decoder was exported, ``attention_scores``/``decoder_step``); tensors in and out are torch tensors
(float32 on CPU), so the search code is shared with the torch backend.

Chunk size and left chunks are constants of the exported graphs: ``-1`` / ``<= 0`` (the CLI defaults)
mean the exported values, anything else is a :class:`UserError`. The last, shorter chunk of a stream is
zero-padded to the graph's input length and its padded output frames are masked and dropped.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qifusion.errors import UserError
from qifusion.export.onnx_state import OnnxState
from qifusion.models.aid import frame_evidence, utterance_posterior
from qifusion.models.protocol import ChunkGeometry, ChunkResult, EncodeResult

log = logging.getLogger(__name__)


@dataclass
class LoadedOnnxModel:
    """Same fields as :class:`qifusion.modeldir.LoadedModel`; ``model`` is an :class:`OnnxModel`."""

    model: OnnxModel
    config: Any
    tokenizer: Any
    accents: list[str]
    card: dict[str, Any]


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise UserError(f"cannot load ONNX model {path}: {e}") from e


class OnnxModel:
    """Streaming chunk step (and chunk-by-chunk ``encode``) of an export dir; no attention decoder."""

    has_decoder = False

    def __init__(self, export_dir: Path, info: dict[str, Any]) -> None:
        self.export_dir = export_dir
        self.chunk_size = int(info["chunk_size"])
        self.left_chunks = int(info["left_chunks"])
        self.required = self.chunk_size * self.left_chunks
        self.sess = _session(export_dir / info["files"]["chunk"])
        meta = self.sess.get_modelmeta().custom_metadata_map
        self.geometry = ChunkGeometry(self.chunk_size, self.left_chunks, int(meta["subsampling_rate"]),
                                      int(meta["right_context"]))
        self.subsampling_rate = self.geometry.subsampling
        self.right_context = self.geometry.right_context
        self.input_frames = self.geometry.window
        self.input_names = [i.name for i in self.sess.get_inputs()]
        self.output_names = [o.name for o in self.sess.get_outputs()]
        self._shapes = {i.name: i.shape for i in self.sess.get_inputs()}
        self.num_accents = int(meta.get("num_accents", 0)) if "accent_post" in self.output_names else 0
        self.aid_pooling = meta.get("aid_pooling", "posterior")  # exports before the key: the paper's mean
        self._warned = False

    # ---- options --------------------------------------------------------------------------------
    def chunk_geometry(self, chunk_size: int = -1, left_chunks: int = -1) -> ChunkGeometry:
        """The exported geometry; UserError unless (chunk_size, left_chunks) are the exported ones
        (or -1 = exported)."""
        self.check_options(chunk_size, left_chunks)
        return self.geometry

    def check_options(self, chunk_size: int, left_chunks: int) -> None:
        """UserError unless (chunk_size, left_chunks) are the exported ones (or -1 = exported)."""
        ok_c = chunk_size <= 0 or chunk_size == self.chunk_size
        ok_l = left_chunks < 0 or left_chunks == self.left_chunks
        if not (ok_c and ok_l):
            raise UserError(
                f"the ONNX export in {self.export_dir} runs chunk size {self.chunk_size} with "
                f"{self.left_chunks} left chunks; got chunk size {chunk_size}, left chunks {left_chunks} "
                "(re-export with `qifusion export --chunk-size/--left-chunks`, or use --backend torch)"
            )
        if (chunk_size <= 0 or left_chunks < 0) and not self._warned:
            self._warned = True
            log.warning("ONNX backend: decoding with the exported chunk size %d and %d left chunks",
                        self.chunk_size, self.left_chunks)

    # ---- streaming ------------------------------------------------------------------------------
    def init_state(self, batch_size: int = 1, **_: Any) -> OnnxState:
        """Zero caches, empty cache mask, for ``batch_size`` streams."""
        def zeros(name: str, batch_axis: int) -> np.ndarray | None:
            if name not in self._shapes:
                return None
            shape = list(self._shapes[name])
            shape[batch_axis] = batch_size
            return np.zeros(shape, dtype=np.float32)

        return OnnxState(
            offset=np.zeros(batch_size, dtype=np.int64),
            att_cache=zeros("att_cache", 1),  # type: ignore[arg-type]
            cnn_cache=zeros("cnn_cache", 1),  # type: ignore[arg-type]
            cache_mask=np.zeros((batch_size, self.required), dtype=bool),
            laf_cache=zeros("laf_cache", 0),
            fusion_cache=zeros("fusion_cache", 0),
            post_sum=np.zeros((batch_size, self.num_accents)) if self.num_accents else None,
        )

    def forward_chunk(self, feats: torch.Tensor, state: OnnxState, *, chunk_size: int,
                      left_chunks: int) -> tuple[ChunkResult, OnnxState]:
        """:meth:`step` with the geometry given by ``chunk_size`` / ``left_chunks``."""
        return self.step(feats, state, self.chunk_geometry(chunk_size, left_chunks))

    def step(self, feats: torch.Tensor, state: OnnxState,
             geometry: ChunkGeometry) -> tuple[ChunkResult, OnnxState]:
        """One chunk of B streams: feats (B, T_in, F) with T_in <= the graph's input length."""
        if geometry != self.geometry:
            self.check_options(geometry.chunk_size, geometry.left_chunks)
        x = feats.detach().to("cpu", torch.float32).numpy()
        b, t_in, f = x.shape
        if t_in > self.input_frames or t_in < self.right_context + 1:
            raise ValueError(f"chunk has {t_in} fbank frames; the ONNX graph takes "
                             f"{self.right_context + 1}..{self.input_frames}")
        c = self.geometry.output_frames(t_in)  # valid output frames
        if t_in < self.input_frames:
            x = np.concatenate([x, np.zeros((b, self.input_frames - t_in, f), np.float32)], axis=1)
        outs, new = self._run_chunk(x, state, np.full(b, c))
        post = outs.get("accent_post")
        utt = new.accent_posterior(self.aid_pooling)
        res = ChunkResult(
            ctc_log_probs=torch.from_numpy(outs["ctc_log_probs"][:, :c]),
            memory=torch.from_numpy(outs["memory"][:, :c]),
            accent_post=None if post is None else torch.from_numpy(post[:, :c]),
            accent_utt=None if utt is None else torch.from_numpy(utt.astype(np.float32)),
        )
        return res, new

    def _run_chunk(self, x: np.ndarray, state: OnnxState,
             counts: np.ndarray) -> tuple[dict[str, np.ndarray], OnnxState]:
        """The graph on x (B, window, F) with ``counts[b]`` valid output frames per stream (the others
        masked); returns the graph's outputs by name and the new state."""
        chunk_mask = np.arange(self.chunk_size)[None, :] < counts[:, None]  # (B, C)
        feeds = {"feats": x, "att_cache": state.att_cache, "cnn_cache": state.cnn_cache,
                 "cache_mask": state.cache_mask, "chunk_mask": chunk_mask, "laf_cache": state.laf_cache,
                 "fusion_cache": state.fusion_cache}
        outs = dict(zip(self.output_names, self.sess.run(None, {n: feeds[n] for n in self.input_names})))
        post = outs.get("accent_post")
        post_sum = state.post_sum
        if post is not None and post_sum is not None:
            evidence = frame_evidence(torch.from_numpy(post), self.aid_pooling).numpy()
            post_sum = post_sum + np.where(chunk_mask[..., None], evidence, 0.0).sum(axis=1, dtype=np.float64)
        new = OnnxState(
            offset=state.offset + counts,
            att_cache=outs["new_att_cache"],
            cnn_cache=outs["new_cnn_cache"],
            cache_mask=np.concatenate([state.cache_mask, chunk_mask], axis=1)[:, self.chunk_size :],
            laf_cache=outs.get("new_laf_cache"),
            fusion_cache=outs.get("new_fusion_cache"),
            post_sum=post_sum,
        )
        return outs, new

    # ---- offline ----------------------------------------------------------------------------------
    def encode(self, feats: torch.Tensor, feats_lens: torch.Tensor, *, chunk_size: int = -1,
               left_chunks: int = -1, accents: torch.Tensor | None = None) -> EncodeResult:
        """Chunk by chunk over all utterances of feats (B, T, F) at once (B streams per graph call);
        equals the torch model's chunk-masked ``encode`` with the exported chunk size and left chunks.
        Outputs are zero-padded to the longest utterance."""
        del accents
        self.check_options(chunk_size, left_chunks)
        geom = self.geometry
        lens_in = np.array([int(n) for n in feats_lens.tolist()])
        if lens_in.size == 0 or lens_in.min() < geom.context:
            raise UserError(f"utterance has {int(lens_in.min(initial=0))} fbank frames; at least "
                            f"{geom.context} are needed")
        num_chunks = int((lens_in.max() - geom.context) // geom.stride + 1)
        total = (num_chunks - 1) * geom.stride + geom.window
        x = np.zeros((lens_in.size, max(total, feats.shape[1]), feats.shape[2]), np.float32)
        for b, n in enumerate(lens_in):  # frames past an utterance's end are zeros, as in step()
            x[b, :n] = feats[b, :n].detach().to("cpu", torch.float32).numpy()
        state = self.init_state(lens_in.size)
        pieces: dict[str, list[np.ndarray]] = {"ctc_log_probs": [], "memory": [], "accent_post": []}
        out_lens = np.zeros_like(lens_in)
        for k in range(num_chunks):
            start = k * geom.stride
            counts = np.array([geom.output_frames(geom.next_chunk(int(n) - start, finished=True))
                               for n in lens_in])
            outs, state = self._run_chunk(x[:, start : start + geom.window], state, counts)
            out_lens += counts
            for name, ps in pieces.items():
                if name in outs:
                    ps.append(outs[name])
        t = max(1, int(out_lens.max()))
        valid = np.arange(t)[None, :] < out_lens[:, None]  # valid frames are a prefix of each row

        def cat(name: str) -> torch.Tensor | None:
            if not pieces[name]:
                return None
            y = np.concatenate(pieces[name], axis=1)[:, :t]
            return torch.from_numpy(np.where(valid[..., None], y, 0.0).astype(np.float32))

        lens = torch.from_numpy(out_lens)
        post = cat("accent_post")
        utt = None
        if post is not None:
            utt = utterance_posterior(post.double(), torch.from_numpy(valid), self.aid_pooling).float()
        return EncodeResult(cat("ctc_log_probs"), cat("memory"), lens, post, utt)

    # ---- attention decoder (exported only with one: OnnxModelWithDecoder) -------------------------
    def decoder_step(self, memory: torch.Tensor, memory_mask: torch.Tensor, ys: torch.Tensor,
                     cache: Any) -> tuple[torch.Tensor, None]:
        raise RuntimeError(f"the ONNX export in {self.export_dir} has no attention decoder")

    def attention_scores(self, memory: torch.Tensor, lens: torch.Tensor, hyps_per_utt: list[list[list[int]]],
                         *, reverse_weight: float = 0.0) -> list[torch.Tensor]:
        raise RuntimeError(f"the ONNX export in {self.export_dir} has no attention decoder")


class OnnxModelWithDecoder(OnnxModel):
    """:class:`OnnxModel` plus the attention decoder (rescoring and attention beam search)."""

    has_decoder = True

    def __init__(self, export_dir: Path, info: dict[str, Any], *, sos_eos: int) -> None:
        super().__init__(export_dir, info)
        self.sos_eos = sos_eos
        self.decoder = _session(export_dir / info["files"]["decoder"])
        r = info["files"].get("r_decoder")
        self.r_decoder = _session(export_dir / r) if r else None

    @staticmethod
    def _run(sess: Any, memory: torch.Tensor, mask: torch.Tensor, ys_in: torch.Tensor,
             ys_lens: torch.Tensor) -> torch.Tensor:
        out = sess.run(None, {"memory": memory.detach().to("cpu", torch.float32).numpy(),
                              "memory_mask": mask.cpu().numpy().astype(bool),
                              "ys_in": ys_in.cpu().numpy().astype(np.int64),
                              "ys_lens": ys_lens.cpu().numpy().astype(np.int64)})[0]
        return torch.from_numpy(out)

    def decoder_step(self, memory: torch.Tensor, memory_mask: torch.Tensor, ys: torch.Tensor,
                     cache: Any) -> tuple[torch.Tensor, None]:
        """Next-token log-probs (N, V) after prefixes ys (N, L); memory_mask (N, 1, T'). No cache: the
        whole prefix is re-run (the graph has no incremental state)."""
        del cache
        n, length = ys.shape
        lp = self._run(self.decoder, memory, memory_mask[:, 0], ys, torch.full((n,), length))
        return lp[:, -1], None

    def attention_scores(self, memory: torch.Tensor, lens: torch.Tensor, hyps_per_utt: list[list[list[int]]],
                         *, reverse_weight: float = 0.0) -> list[torch.Tensor]:
        """As :meth:`QifusionModel.attention_scores`: B tensors (N_b,) of decoder log-likelihoods."""
        from qifusion.models.decoder import add_sos_eos, reverse_tokens

        counts = [len(h) for h in hyps_per_utt]
        flat = [h for hs in hyps_per_utt for h in hs]
        if not flat:
            return [torch.zeros(0) for _ in counts]
        idx = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        mem = memory.detach().cpu()[idx]
        mmask = torch.arange(mem.size(1)).unsqueeze(0) < lens.cpu()[idx].unsqueeze(1)
        hl = torch.tensor([len(h) for h in flat])
        toks = torch.full((len(flat), max(1, int(hl.max()))), -1, dtype=torch.long)
        for i, h in enumerate(flat):
            toks[i, : len(h)] = torch.tensor(h, dtype=torch.long)

        def score(sess: Any, t: torch.Tensor) -> torch.Tensor:
            ys_in, ys_out = add_sos_eos(t, hl, self.sos_eos)
            logp = self._run(sess, mem, mmask, ys_in, hl + 1).double()
            ok = ys_out >= 0
            tok = logp.gather(-1, ys_out.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            return (tok * ok).sum(1)

        s = score(self.decoder, toks)
        rw = reverse_weight if self.r_decoder is not None else 0.0
        if rw > 0:
            s = (1.0 - rw) * s + rw * score(self.r_decoder, reverse_tokens(toks, hl))
        return list(torch.split(s.float(), counts))


def find_export_dir(path: Path) -> Path:
    """``path`` itself when it holds export.json, else ``path/onnx``; UserError naming both otherwise."""
    path = Path(path)
    for cand in (path, path / "onnx"):
        if (cand / "export.json").is_file():
            return cand
    raise UserError(
        f"no ONNX export in {path} or {path / 'onnx'} (export.json missing); run "
        f"`qifusion export --model {path} --out {path / 'onnx'}` first"
    )


def exported_chunk_size(path: Path) -> int:
    """The chunk size of the export in ``path`` (see :func:`find_export_dir`); UserError when unreadable."""
    d = find_export_dir(path)
    try:
        return int(json.loads((d / "export.json").read_text())["chunk_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{d / 'export.json'} is not a valid export description ({e})") from e


def load_onnx_model(path: Path) -> LoadedOnnxModel:
    """Load an export dir (or a model dir with its export in ``onnx/``) for the ONNX backend."""
    from qifusion.data.tokenizer import Tokenizer
    from qifusion.modeldir import load_config_file, read_accents

    d = find_export_dir(path)
    try:
        info = json.loads((d / "export.json").read_text())
        files = info["files"]
        int(info["chunk_size"]), int(info["left_chunks"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{d / 'export.json'} is not a valid export description ({e})") from e
    for name in files.values():
        if not (d / name).is_file():
            raise UserError(f"export dir {d} is incomplete: {name} is missing")
    config = load_config_file(d / "config.yaml")
    tokenizer = Tokenizer.load(d)
    accents = read_accents(d / "accents.txt")
    card: dict[str, Any] = {}
    if (d / "card.json").is_file():
        card = json.loads((d / "card.json").read_text(encoding="utf-8"))
    if "decoder" in files:
        model: OnnxModel = OnnxModelWithDecoder(d, info, sos_eos=tokenizer.vocab_size - 1)
    else:
        model = OnnxModel(d, info)
    return LoadedOnnxModel(model=model, config=config, tokenizer=tokenizer, accents=accents, card=card)
