"""The composed model: streaming Conformer + (LAF, AID, fusion) + CTC and attention heads.

One code path for Qifusion-Net and its baseline: the accent parts are built only when switched on in
``cfg.accent`` (no unused parameters, so DDP runs without ``find_unused_parameters``). Data flow::

    feats -> encoder -> out (B,T',D), hidden blocks
    hidden[laf_layers] -> LAF -> accent embedding (B,T',E) -> AID frame posteriors
    (out, accent embedding) -> cross-attention fusion (encoder chunk mask) -> memory -> attention decoder
    CTC reads ``out`` (or ``memory`` with ``fuse_into_ctc``)

The oracle baseline (``oracle_accent``) adds an embedding of the true accent label to ``out`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from qifusion.config import ConfigError, ModelConfig
from qifusion.models.aid import AccentClassifier, aid_accuracy, frame_evidence, utterance_posterior
from qifusion.models.conformer import ConformerEncoder
from qifusion.models.ctc import CTCHead, at_least_float32
from qifusion.models.decoder import (
    TransformerDecoder,
    add_sos_eos,
    label_smoothing_loss,
    reverse_tokens,
)
from qifusion.models.fusion import AccentFusion
from qifusion.models.geometry import ChunkGeometry
from qifusion.models.laf import LastBlockEmbedding, LayerAdaptedFusion
from qifusion.models.protocol import ChunkResult, EncodeResult
from qifusion.models.state import StreamState

__all__ = ["ChunkResult", "EncodeResult", "QifusionModel", "StepCaches", "StepOutput", "StreamState"]


class StepCaches(NamedTuple):
    """Tensor caches of one chunk step (B streams, T_cache frames of history).

    att (num_blocks,B,H,T_cache,2*d_k); cnn (num_blocks,B,D,K-1); laf (B,L,K_laf-1,D) or None (no LAF);
    fusion (B,T_cache,D_kv) or None (no fusion).
    """

    att: torch.Tensor
    cnn: torch.Tensor
    laf: torch.Tensor | None = None
    fusion: torch.Tensor | None = None


class StepOutput(NamedTuple):
    """One chunk's outputs: ctc_log_probs (B,C,V), memory (B,C,D), aid_logits (B,C,A) or None."""

    ctc_log_probs: torch.Tensor
    memory: torch.Tensor
    aid_logits: torch.Tensor | None


@dataclass
class _Parts:
    """Internal per-call outputs of the accent parts."""

    memory: torch.Tensor
    ctc_in: torch.Tensor
    aid_logits: torch.Tensor | None


class QifusionModel(nn.Module):
    """Qifusion-Net (or the Conformer baseline when the accent parts are off).

    Args:
        cfg: model config. vocab_size: V (id 0 blank, last id sos/eos). num_accents: A.
    """

    def __init__(self, cfg: ModelConfig, *, vocab_size: int, num_accents: int) -> None:
        super().__init__()
        cfg.validate()
        acc = cfg.accent
        if (acc.use_aid or acc.oracle_accent) and num_accents < 1:
            raise ConfigError("model.accent.use_aid / oracle_accent need at least one accent (accents.txt)")
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.num_accents = num_accents
        self.sos_eos = vocab_size - 1
        self.encoder = ConformerEncoder(cfg.encoder)
        d = self.encoder.output_size
        self.laf: LayerAdaptedFusion | None = None
        self.last_embed: LastBlockEmbedding | None = None
        if acc.use_laf:
            self.laf = LayerAdaptedFusion(acc, d)
        elif acc.use_aid or acc.use_fusion:
            self.last_embed = LastBlockEmbedding(acc, d)
        self.aid = AccentClassifier(acc, num_accents) if acc.use_aid else None
        self.fusion = AccentFusion(acc, d) if acc.use_fusion else None
        self.oracle = nn.Embedding(num_accents + 1, d, padding_idx=num_accents) if acc.oracle_accent else None
        self.ctc = CTCHead(d, vocab_size)
        self.decoder: TransformerDecoder | None = None
        self.r_decoder: TransformerDecoder | None = None
        if cfg.ctc_weight < 1.0:
            self.decoder = TransformerDecoder(vocab_size, d, cfg.decoder, num_blocks=cfg.decoder.num_blocks)
            if cfg.reverse_weight > 0 and cfg.decoder.r_num_blocks > 0:
                self.r_decoder = TransformerDecoder(
                    vocab_size, d, cfg.decoder, num_blocks=cfg.decoder.r_num_blocks
                )

    # ------------------------------------------------------------------ shared accent path
    def _accent_parts(
        self,
        out: torch.Tensor,
        hidden: list[torch.Tensor],
        fusion_mask: torch.Tensor,
        *,
        accents: torch.Tensor | None,
        laf_cache: torch.Tensor | None = None,
        fusion_cache: torch.Tensor | None = None,
    ) -> tuple[_Parts, torch.Tensor | None, torch.Tensor | None]:
        """Accent embedding, AID logits, fusion. Returns (parts, new laf cache, fusion kv source)."""
        emb = new_laf = kv_src = None
        if self.laf is not None:
            emb, new_laf = self.laf(hidden, laf_cache)
        elif self.last_embed is not None:
            emb = self.last_embed(out)
        aid_logits = self.aid(emb) if self.aid is not None else None
        memory = out
        if self.fusion is not None:
            memory, kv_src = self.fusion(out, emb, fusion_mask, fusion_cache)
        if self.oracle is not None:
            ids = torch.full((out.size(0),), self.num_accents, dtype=torch.long, device=out.device)
            if accents is not None:
                ids = torch.where(accents >= 0, accents, ids)
            memory = memory + self.oracle(ids).to(out.dtype).unsqueeze(1)
        ctc_in = memory if self.cfg.accent.fuse_into_ctc else out
        return _Parts(memory, ctc_in, aid_logits), new_laf, kv_src

    def _encode(
        self,
        feats: torch.Tensor,
        feats_lens: torch.Tensor,
        *,
        chunk_size: int | None,
        left_chunks: int,
        accents: torch.Tensor | None,
    ) -> tuple[_Parts, torch.Tensor]:
        eo = self.encoder(feats, feats_lens, chunk_size=chunk_size, left_chunks=left_chunks)
        mask = eo.mask
        fusion_mask = eo.chunk_mask & mask.unsqueeze(1)  # same chunk mask as the encoder, + padding
        parts, _, _ = self._accent_parts(eo.out, eo.hidden, fusion_mask, accents=accents)
        return parts, mask

    # ------------------------------------------------------------------ training
    def forward(
        self,
        feats: torch.Tensor,
        feats_lens: torch.Tensor,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
        accents: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Training losses.

        feats (B,T,F) raw fbank, feats_lens (B,), tokens (B,L) padded -1, token_lens (B,), accents (B,)
        (-1 unknown). Returns ``loss`` = w_ctc*CTC + (1-w_ctc)*ATT + w_aid*AID, and its parts
        ``loss_ctc``, ``loss_att``, ``loss_aid``, ``aid_acc`` (absent parts omitted).
        """
        cfg = self.cfg
        parts, mask = self._encode(feats, feats_lens, chunk_size=None, left_chunks=-1, accents=accents)
        lens = mask.sum(1)
        res: dict[str, torch.Tensor] = {}
        loss_ctc = self.ctc.loss(self.ctc(parts.ctc_in), lens, tokens, token_lens)
        res["loss_ctc"] = loss_ctc
        loss = cfg.ctc_weight * loss_ctc
        if self.decoder is not None:
            loss_att = self._att_loss(parts.memory, mask, tokens, token_lens)
            res["loss_att"] = loss_att
            loss = loss + (1.0 - cfg.ctc_weight) * loss_att
        if parts.aid_logits is not None:
            assert self.aid is not None
            loss_aid = self.aid.loss(parts.aid_logits, mask, accents)
            if loss_aid is None:  # no labelled utterance: keep the graph connected for DDP
                loss_aid = parts.aid_logits.sum() * 0.0
            else:
                post = utterance_posterior(parts.aid_logits.softmax(-1), mask, cfg.accent.aid_pooling)
                acc = aid_accuracy(post.detach(), accents)
                if acc is not None:
                    res["aid_acc"] = acc
            res["loss_aid"] = loss_aid
            loss = loss + cfg.aid_weight * loss_aid
        res["loss"] = loss
        return res

    def _att_loss(
        self, memory: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor, token_lens: torch.Tensor
    ) -> torch.Tensor:
        assert self.decoder is not None
        mmask = mask.unsqueeze(1)
        ys_in, ys_out = add_sos_eos(tokens, token_lens, self.sos_eos)
        lsm = self.cfg.lsm_weight
        loss = label_smoothing_loss(self.decoder(memory, mmask, ys_in, token_lens + 1), ys_out, lsm)
        if self.r_decoder is not None:
            r_in, r_out = add_sos_eos(reverse_tokens(tokens, token_lens), token_lens, self.sos_eos)
            r_loss = label_smoothing_loss(self.r_decoder(memory, mmask, r_in, token_lens + 1), r_out, lsm)
            rw = self.cfg.reverse_weight
            loss = (1.0 - rw) * loss + rw * r_loss
        return loss

    @property
    def has_decoder(self) -> bool:
        """True when the model has an attention decoder (rescoring, attention beam search)."""
        return self.decoder is not None

    @property
    def aid_pooling(self) -> str:
        """How the utterance accent decision pools frames (``model.accent.aid_pooling``; the ONNX backend has
        the same attribute)."""
        return self.cfg.accent.aid_pooling

    # ------------------------------------------------------------------ offline inference
    def encode(
        self,
        feats: torch.Tensor,
        feats_lens: torch.Tensor,
        *,
        chunk_size: int = -1,
        left_chunks: int = -1,
        accents: torch.Tensor | None = None,
    ) -> EncodeResult:
        """Chunk-masked full forward (deterministic). ``accents`` only for oracle models."""
        parts, mask = self._encode(
            feats, feats_lens, chunk_size=chunk_size, left_chunks=left_chunks, accents=accents
        )
        post = utt = None
        if parts.aid_logits is not None:
            post = parts.aid_logits.softmax(-1)
            utt = utterance_posterior(post, mask, self.cfg.accent.aid_pooling)
        return EncodeResult(self.ctc(parts.ctc_in), parts.memory, mask.sum(1), post, utt)

    # ------------------------------------------------------------------ streaming
    def init_state(self, batch_size: int = 1, *, accents: torch.Tensor | None = None) -> StreamState:
        """Fresh state of ``batch_size`` streams (``accents`` (B,) only for oracle models)."""
        p = next(self.parameters())
        dev, dt = p.device, p.dtype
        att_cache, cnn_cache = self.encoder.init_cache(batch_size, device=dev, dtype=dt)
        return StreamState(
            offset=torch.zeros(batch_size, dtype=torch.long, device=dev),
            att_cache=att_cache,
            cnn_cache=cnn_cache,
            cache_mask=torch.zeros(batch_size, 0, dtype=torch.bool, device=dev),
            laf_cache=None if self.laf is None else self.laf.init_cache(batch_size, device=dev, dtype=dt),
            fusion_cache=None
            if self.fusion is None
            else self.fusion.init_cache(batch_size, device=dev, dtype=dt),
            post_sum=None
            if self.aid is None
            else torch.zeros(batch_size, self.num_accents, device=dev, dtype=dt),
            accents=None
            if self.oracle is None
            else (accents if accents is not None else torch.full((batch_size,), -1, device=dev)),
        )

    def chunk_geometry(self, chunk_size: int = -1, left_chunks: int = -1) -> ChunkGeometry:
        """Streaming geometry of this encoder for ``chunk_size`` (> 0) output frames per chunk."""
        enc = self.encoder
        return ChunkGeometry(chunk_size, left_chunks, enc.subsampling_rate, enc.right_context)

    def chunk_forward(
        self,
        feats: torch.Tensor,
        caches: StepCaches,
        valid: torch.Tensor,
        *,
        cache_frames: int,
        accents: torch.Tensor | None = None,
        ctc_only: bool = False,
    ) -> tuple[StepOutput, StepCaches]:
        """THE chunk step on tensors, which :meth:`step` and both ONNX exporters are built from.

        feats (B,T_in,F) raw fbank; ``valid`` (B,T_cache+C) bool marks real cache and chunk frames
        (False = empty cache slot or a padded output frame); ``cache_frames`` is the cache policy:
        history frames kept in the returned caches (< 0 all, else that many; the fusion cache is
        kept frame-aligned with the attention cache). ``ctc_only``: skip the accent parts when the CTC
        head does not read them (memory is then the encoder output and ``aid_logits`` None).
        """
        b = feats.size(0)
        enc = self.encoder
        out, hidden, att, cnn = enc.forward_chunk(feats, 0, cache_frames, caches.att, caches.cnn, valid)
        if ctc_only and not self.cfg.accent.fuse_into_ctc:
            return StepOutput(self.ctc(out), out, None), StepCaches(att, cnn, caches.laf, caches.fusion)
        parts, laf, kv_src = self._accent_parts(
            out, hidden, valid.unsqueeze(1).expand(b, out.size(1), -1), accents=accents,
            laf_cache=caches.laf, fusion_cache=caches.fusion,
        )
        fusion = None if kv_src is None else kv_src[:, kv_src.size(1) - att.size(3):]
        out_ = StepOutput(self.ctc(parts.ctc_in), parts.memory, parts.aid_logits)
        return out_, StepCaches(att, cnn, laf, fusion)

    def step(
        self, feats: torch.Tensor, state: StreamState, geometry: ChunkGeometry
    ) -> tuple[ChunkResult, StreamState]:
        """One chunk of B streams: feats (B,T_in,F) with T_in <= ``geometry.window``.

        Equals :meth:`encode` with the same chunk size / left chunks on the whole utterance.
        """
        c = geometry.output_frames(feats.size(1))
        valid = torch.cat([state.cache_mask, state.cache_mask.new_ones(feats.size(0), c)], dim=1)
        caches = StepCaches(state.att_cache, state.cnn_cache, state.laf_cache, state.fusion_cache)
        out, new = self.chunk_forward(feats, caches, valid, cache_frames=geometry.cache_frames,
                                      accents=state.accents)
        post = post_sum = None
        if out.aid_logits is not None and state.post_sum is not None:
            post = out.aid_logits.softmax(-1)
            post_sum = state.post_sum + frame_evidence(post, self.cfg.accent.aid_pooling).sum(1)
        new_state = StreamState(
            offset=state.offset + c,
            att_cache=new.att,
            cnn_cache=new.cnn,
            cache_mask=valid[:, valid.size(1) - new.att.size(3) :],
            laf_cache=new.laf,
            fusion_cache=new.fusion,
            post_sum=post_sum,
            accents=state.accents,
        )
        res = ChunkResult(out.ctc_log_probs, out.memory, post, new_state.accent_posterior(self.aid_pooling))
        return res, new_state

    def forward_chunk(
        self, feats: torch.Tensor, state: StreamState, *, chunk_size: int, left_chunks: int
    ) -> tuple[ChunkResult, StreamState]:
        """:meth:`step` with the geometry given by ``chunk_size`` / ``left_chunks``."""
        return self.step(feats, state, self.chunk_geometry(chunk_size, left_chunks))

    # ------------------------------------------------------------------ decoder use by search
    def decoder_step(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        ys: torch.Tensor,
        cache: list[torch.Tensor] | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Next-token log-probs (N,V) of the left-to-right decoder for prefixes ys (N,L) (sos first).

        memory (N,T',D), memory_mask (N,1,T') bool; cache from the previous step (None at first).
        """
        if self.decoder is None:
            raise RuntimeError("this model has no attention decoder (ctc_weight = 1)")
        return self.decoder.forward_one_step(memory, memory_mask, ys, cache)

    @torch.no_grad()
    def attention_scores(
        self,
        memory: torch.Tensor,
        lens: torch.Tensor,
        hyps_per_utt: list[list[list[int]]],
        *,
        reverse_weight: float = 0.0,
    ) -> list[torch.Tensor]:
        """Attention-decoder log-likelihood of each hypothesis (incl. eos), for rescoring.

        memory (B,T',D), lens (B,), hyps_per_utt[b] = list of N_b token-id lists. Score =
        (1-rw)*L2R + rw*R2L (WeNet's mix; rw = reverse_weight, used only when an R2L decoder exists).
        Returns B tensors (N_b,).
        """
        if self.decoder is None:
            raise RuntimeError("this model has no attention decoder (ctc_weight = 1)")
        counts = [len(h) for h in hyps_per_utt]
        n = max(counts, default=0)
        if n == 0:
            return [memory.new_zeros(0) for _ in counts]
        # n rows per utterance (short lists padded with empty hypotheses): the decoder reads each
        # utterance's memory once for its n hypotheses (MultiHeadAttention with fewer key rows)
        flat = [h for hs in hyps_per_utt for h in [*hs, *([[]] * (n - len(hs)))]]
        mmask = torch.arange(memory.size(1), device=memory.device).unsqueeze(0) < lens.unsqueeze(1)
        mmask = mmask.unsqueeze(1)  # (B, 1, T')
        hl = torch.tensor([len(h) for h in flat], device=memory.device)
        toks = torch.full((len(flat), max(1, int(hl.max()))), -1, dtype=torch.long, device=memory.device)
        for i, h in enumerate(flat):
            toks[i, : len(h)] = torch.tensor(h, dtype=torch.long)
        score = self._seq_logp(self.decoder, memory, mmask, toks, hl)
        rw = reverse_weight if self.r_decoder is not None else 0.0
        if rw > 0:
            r = self._seq_logp(self.r_decoder, memory, mmask, reverse_tokens(toks, hl), hl)
            score = (1.0 - rw) * score + rw * r
        score = score.view(len(counts), n)
        return [score[b, :c] for b, c in enumerate(counts)]

    def _seq_logp(
        self,
        dec: TransformerDecoder,
        mem: torch.Tensor,
        mmask: torch.Tensor,
        toks: torch.Tensor,
        lens: torch.Tensor,
    ) -> torch.Tensor:
        ys_in, ys_out = add_sos_eos(toks, lens, self.sos_eos)
        logp = at_least_float32(dec(mem, mmask, ys_in, lens + 1)).log_softmax(-1)  # not bf16
        ok = ys_out >= 0
        tok_lp = logp.gather(-1, ys_out.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (tok_lp * ok.to(tok_lp.dtype)).sum(1)

    def laf_weights(self) -> torch.Tensor | None:
        """Softmax LAF layer weights (L,) in ``laf_layers`` order, or None without LAF."""
        return None if self.laf is None else self.laf.weights().detach()
