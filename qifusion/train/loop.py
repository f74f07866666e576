"""The epoch loop: forward, backward, accumulation, clipping, AMP, skipping non-finite losses.

A :class:`Trainer` drives any model whose ``forward(feats, feats_lens, tokens, token_lens, accents)``
returns a dict with a scalar ``loss`` and any loader with ``set_epoch``, ``len``, ``state_dict`` and
``load_state_dict`` yielding :class:`qifusion.data.dataset.Batch`-like objects (``feats (B,T,F)``,
``feats_lens (B,)``, ``tokens (B,L)``, ``token_lens (B,)``, ``accents (B,)``, ``durations (B,)``).

DDP safety: before each forward the ranks agree that every rank has a batch (so a rank whose loader ran
short ends the epoch together with the others instead of hanging), and after it that the loss is finite
on every rank (a non-finite loss on any rank makes all ranks skip that micro-batch's backward).
Resume: the state (counters + loader position) is captured only at optimizer-step boundaries. Every
rank's RNG states are gathered into the checkpoint (``rng_ranks``) and each rank restores its own, so a
resumed DDP run draws the same dropout masks and chunk sizes on every rank as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from tqdm import tqdm

from qifusion.config import TrainConfig
from qifusion.train import checkpoint as ckpt
from qifusion.train.ddp import DistInfo, all_reduce, average_gradients, barrier
from qifusion.train.logs import LOG, MetricsLog, resident_mb
from qifusion.train.scheduler import Schedule

# loss parts of the model's output dict that are logged next to the total (mean over the interval)
LOSS_PARTS = ("loss_ctc", "loss_att", "loss_aid", "aid_acc")
EvalFn = Callable[[torch.nn.Module], dict[str, float]]


@dataclass
class TrainState:
    """Counters saved in checkpoints. ``epoch`` is 1-based; ``batch`` counts batches consumed in it."""

    epoch: int = 1
    batch: int = 0
    step: int = 0
    epoch_done: bool = False
    skipped_nonfinite_loss: int = 0
    skipped_nonfinite_grad: int = 0
    skipped_empty_batches: int = 0
    audio_seconds: float = 0.0
    train_seconds: float = 0.0  # wall-clock of training (forward, backward, data), dev evaluations excluded
    dev: list[dict[str, Any]] = field(default_factory=list)


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (oneDNN: AVX512-BF16 or AMX); elsewhere a bf16 autocast
    is emulated and slower than float32."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Trainer:
    """Runs epochs over ``train_loader``; ``evaluate(model)`` gives dev metrics (``dev_loss``, ...)."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Schedule,
        train_loader: Any,
        cfg: TrainConfig,
        dist_info: DistInfo,
        exp_dir: Path,
        evaluate: EvalFn | None = None,
        metrics: MetricsLog | None = None,
        extra_state: dict[str, Any] | None = None,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.raw_model = model.module if hasattr(model, "module") else model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loader = train_loader
        self.cfg = cfg
        self.dist = dist_info
        self.exp_dir = Path(exp_dir)
        self.evaluate = evaluate
        self.metrics = metrics or MetricsLog(self.exp_dir, enabled=False)
        self.extra_state = extra_state or {}
        self.progress = progress and dist_info.is_main
        self.state = TrainState()
        cuda = dist_info.device.type == "cuda"
        # bf16 where the device computes it natively (elsewhere it is emulated, slower than float32); fp16
        # on CUDA only
        if cfg.amp == "bf16":
            amp = torch.cuda.is_bf16_supported(including_emulation=False) if cuda else cpu_has_bf16()
        else:
            amp = cuda
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp) if amp else None
        if cfg.amp != "none" and not amp:
            why = ("needs CUDA" if cfg.amp == "fp16" else
                   "needs native bf16 matmuls (CUDA compute capability >= 8.0, or AVX512-BF16 / AMX on CPU)")
            LOG.warning("train.amp=%s %s; training in float32", cfg.amp, why)
        LOG.info("training precision: %s", "float32" if self.amp_dtype is None else f"{cfg.amp} autocast")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.params = [p for p in self.raw_model.parameters() if p.requires_grad]
        self._micro = 0  # micro-batches in the current accumulation cycle
        self._valid = 0  # of which had a finite loss (backward done)
        self._synced = True  # whether the last backward all-reduced the gradients
        self._win = self._new_window()
        self._clock = time.perf_counter()  # start of the training time not yet added to train_seconds
        self._time_up = False  # train.max_minutes spent (agreed by all ranks at each optimizer step)

    @staticmethod
    def _new_window() -> dict[str, Any]:
        """Running sums of the current logging interval (``parts``: loss part -> sum over micro-batches)."""
        return {"loss": 0.0, "n": 0, "audio": 0.0, "t0": time.perf_counter(), "parts": {}}

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": ckpt.rng_state(),
            "loader": self.loader.state_dict(),
            "trainer": asdict(self.state),
            **self.extra_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.state = TrainState(**state["trainer"])
        if not self.state.epoch_done:
            self.loader.set_epoch(self.state.epoch)
            self.loader.load_state_dict(state["loader"])
        self._restore_rng(state)

    def _restore_rng(self, state: dict[str, Any]) -> None:
        """This rank's RNG states from ``rng_ranks``; rank 0's (``rng``) if the world size changed."""
        ranks = state.get("rng_ranks")
        ws = self.dist.world_size
        if ranks is not None and len(ranks) == ws:
            ckpt.set_rng_state(ranks[self.dist.rank])
            return
        if ws > 1 or (ranks is not None and len(ranks) != 1):
            saved = len(ranks) if ranks is not None else "unknown"
            LOG.warning("checkpoint RNG states are from world size %s, now %d: every rank restores rank 0's "
                        "(dropout and chunk draws differ from an uninterrupted run)", saved, ws)
        ckpt.set_rng_state(state["rng"])

    def _gather_rng(self) -> list[dict[str, Any]] | None:
        """Every rank's RNG states, on rank 0 (None elsewhere); a collective: all ranks must call it."""
        mine = ckpt.rng_state()
        if not self.dist.distributed:
            return [mine]
        out: list[Any] | None = [None] * self.dist.world_size if self.dist.is_main else None
        torch_dist.gather_object(mine, out, dst=0)
        return out

    def save(self, name: str) -> None:
        """Write ``EXP/name`` (rank 0 only) with the current state; others wait at a barrier."""
        rng_ranks = self._gather_rng()
        if self.dist.is_main:
            last_dev = self.state.dev[-1] if self.state.dev and self.state.epoch_done else {}
            entry = {"epoch": self.state.epoch, "step": self.state.step, **last_dev}
            ckpt.save_checkpoint(self.exp_dir / name, {**self.state_dict(), "rng_ranks": rng_ranks},
                                 index_entry=entry)
            ckpt.prune_checkpoints(self.exp_dir, keep=self.cfg.keep_checkpoints)
            LOG.info("saved %s", self.exp_dir / name)
        barrier(self.dist)

    # ------------------------------------------------------------------ loop
    def _done(self) -> bool:
        return ((self.cfg.max_steps > 0 and self.state.step >= self.cfg.max_steps) or self._time_up
                or self.scheduler.cooldown_done(self.state.step))

    def fit(self) -> TrainState:
        """Train until ``max_epochs``, ``max_steps``, ``max_minutes`` or the end of a cool-down (the lr at 0);
        returns the final counters."""
        self._clock = time.perf_counter()
        while not self._done():
            if self.state.epoch_done:
                if self.state.epoch >= self.cfg.max_epochs:
                    break
                self.state = TrainState(**{**asdict(self.state), "epoch": self.state.epoch + 1, "batch": 0,
                                           "epoch_done": False})
                self.loader.set_epoch(self.state.epoch)
            elif self.state.batch == 0:
                self.loader.set_epoch(self.state.epoch)
            self._train_epoch()
            if self._done() and not self.state.epoch_done:
                break
        if self._done() and not self.state.epoch_done:
            self._end_of_run_checkpoint()
        total = self.state.skipped_nonfinite_loss + self.state.skipped_nonfinite_grad
        if total:
            LOG.warning("skipped %d non-finite losses and %d non-finite gradient steps",
                        self.state.skipped_nonfinite_loss, self.state.skipped_nonfinite_grad)
        return self.state

    def _end_of_run_checkpoint(self) -> None:
        """``max_steps``/``max_minutes`` reached inside an epoch: dev metrics and a step checkpoint (if not
        just written)."""
        metrics = self._run_dev()
        if metrics:
            self.state.dev.append(metrics)
            self.metrics.write({"kind": "dev", "epoch": self.state.epoch, "step": self.state.step, **metrics})
        every = self.cfg.save_interval_steps
        if not (every > 0 and self.state.step % every == 0):
            self.save(f"step_{self.state.step}.pt")

    def _train_epoch(self) -> None:
        self.raw_model.train()
        n_batches = int(all_reduce(self.dist, [len(self.loader)], op="min")[0])
        bar = tqdm(total=n_batches, initial=self.state.batch, desc=f"epoch {self.state.epoch}",
                   disable=not self.progress, dynamic_ncols=True, leave=False)
        it = iter(self.loader)
        while self.state.batch < n_batches and not self._done():
            batch = next(it, None)
            missing, empty = float(batch is None), float(batch is not None and batch.feats.shape[0] == 0)
            if self.dist.distributed:
                missing, empty = all_reduce(self.dist, [missing, empty], op="max")
            if missing:
                LOG.warning("a rank ran out of batches at %d of %d; ending epoch %d on all ranks",
                            self.state.batch, n_batches, self.state.epoch)
                break
            self.state.batch += 1
            if empty:  # every utterance of a batch (on some rank) was unreadable: all ranks skip it
                self.state.skipped_empty_batches += 1
            else:
                self._micro_step(batch, last_in_epoch=self.state.batch >= n_batches)
            bar.update(1)
            if self._win["n"] and bar.n % 5 == 0:
                bar.set_postfix(self._postfix(), refresh=False)
        bar.close()
        if self._micro:  # leftover accumulation at the end of the epoch
            self._optimizer_step()
        if self._done() and self.state.batch < n_batches:
            return
        self.state.epoch_done = True
        self.state.batch = n_batches
        metrics = self._run_dev()
        self.state.dev.append({"epoch": self.state.epoch, "step": self.state.step, **metrics})
        self.metrics.write({"kind": "epoch", "epoch": self.state.epoch, "step": self.state.step,
                            "skipped_nonfinite_loss": self.state.skipped_nonfinite_loss, **metrics})
        LOG.info("epoch %d done at step %d: %s", self.state.epoch, self.state.step,
                 _fmt(metrics) or "no dev set")
        self.save(f"epoch_{self.state.epoch}.pt")

    def _tick(self) -> None:
        """Add the wall-clock since the last tick to ``train_seconds``."""
        now = time.perf_counter()
        self.state.train_seconds += now - self._clock
        self._clock = now

    def _run_dev(self, *, force: bool = False) -> dict[str, float]:
        """Dev metrics (plus ``train_minutes`` so far); the evaluation's own time is not training time."""
        if self.evaluate is None or not (self.cfg.dev_every_epoch or force):
            return {}
        self._tick()
        self.raw_model.eval()
        with torch.no_grad():
            out = self.evaluate(self.raw_model)
        self.raw_model.train()
        self._clock = time.perf_counter()
        return {**out, "train_minutes": self.state.train_seconds / 60.0} if out else out

    def _postfix(self) -> dict[str, str]:
        w = self._win
        el = max(time.perf_counter() - w["t0"], 1e-9)
        return {"loss": f"{w['loss'] / max(w['n'], 1):.3f}", "lr": f"{self.scheduler.get_last_lr()[0]:.2e}",
                "audio/s": f"{w['audio'] / el:.1f}"}

    def _micro_step(self, batch: Any, *, last_in_epoch: bool) -> None:
        dev = self.dist.device
        accum = max(1, self.cfg.accum_grad)
        final_micro = self._micro + 1 >= accum or last_in_epoch
        sync = not self.dist.distributed or final_micro
        use_no_sync = not sync and hasattr(self.model, "no_sync")
        no_sync = self.model.no_sync if use_no_sync else contextlib.nullcontext
        autocast = torch.autocast(dev.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)
        with no_sync(), autocast:
            out = self.model(batch.feats.to(dev), batch.feats_lens.to(dev), batch.tokens.to(dev),
                             batch.token_lens.to(dev), batch.accents.to(dev))
        loss = out["loss"]
        loss_value = float(loss.detach().float())
        finite = math.isfinite(loss_value)
        if self.dist.distributed:
            finite = all_reduce(self.dist, [0.0 if finite else 1.0], op="max")[0] == 0
        self._micro += 1
        if finite:
            with no_sync():
                self.scaler.scale(loss / accum).backward()
            self._valid += 1
            self._synced = sync
            self._win["loss"] += loss_value
            self._win["n"] += 1
            for k in LOSS_PARTS:  # the model's loss parts (absent parts are not logged)
                if k in out:
                    part = self._win["parts"].setdefault(k, [0.0, 0])
                    part[0] += float(out[k].detach().float())
                    part[1] += 1
        else:
            self.state.skipped_nonfinite_loss += 1
            st = self.state
            LOG.warning("non-finite loss at epoch %d batch %d (step %d); skipped (%d so far)",
                        st.epoch, st.batch, st.step, st.skipped_nonfinite_loss)
        audio = float(batch.durations.sum())
        self._win["audio"] += audio * self.dist.world_size
        self.state.audio_seconds += audio * self.dist.world_size
        if final_micro:
            self._optimizer_step()

    def _optimizer_step(self) -> None:
        valid, self._micro, self._valid = self._valid, 0, 0
        if valid == 0:
            self.optimizer.zero_grad(set_to_none=True)
            return
        if not self._synced:  # the synced (last) micro-batch was skipped: reduce by hand
            average_gradients(self.dist, self.params)
            self._synced = True
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        gnorm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        if not math.isfinite(gnorm) and not self.scaler.is_enabled():
            self.state.skipped_nonfinite_grad += 1
            LOG.warning("non-finite gradient norm at step %d; step skipped", self.state.step)
            self.optimizer.zero_grad(set_to_none=True)
            return
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.state.step += 1
        self._tick()
        if self.cfg.max_minutes > 0:
            self._check_time()
        if self.state.step % max(1, self.cfg.log_interval) == 0:
            self._log_interval(gnorm)
        dev_every = self.cfg.dev_every_steps
        if dev_every > 0 and self.state.step % dev_every == 0:
            metrics = self._run_dev(force=True)
            if metrics:
                self.metrics.write({"kind": "dev", "epoch": self.state.epoch, "step": self.state.step,
                                    **metrics})
                LOG.info("step %d (%.1f min of training): %s", self.state.step, self.state.train_seconds / 60,
                         _fmt(metrics))
        every = self.cfg.save_interval_steps
        if every > 0 and self.state.step % every == 0:
            self.save(f"step_{self.state.step}.pt")

    def _check_time(self) -> None:
        """After an optimizer step under ``max_minutes``: stop when the minutes are spent, and start the
        cool-down (``cooldown``) when its share of them is left, over the steps that the mean speed so far
        fits into the rest. Wall clocks differ per rank: every rank acts on the first rank to get there."""
        budget, spent, step = 60.0 * self.cfg.max_minutes, self.state.train_seconds, self.state.step
        up = float(spent >= budget)
        cool = float(self.cfg.cooldown > 0 and not self.scheduler.cooling()
                     and spent >= (1.0 - self.cfg.cooldown) * budget)
        left = step / max(spent, 1e-9) * max(budget - spent, 0.0)
        if self.dist.distributed:
            up, cool, left = all_reduce(self.dist, [up, cool, left], op="max")
        self._time_up = bool(up)
        if cool:
            self.scheduler.set_cooldown(start=step, steps=round(left))  # at least 1 (set_cooldown)
            LOG.info("step %d (%.1f min of training): lr cool-down to 0 over the next %d steps",
                     step, spent / 60.0, self.scheduler.cooldown_steps)

    def _log_interval(self, gnorm: float) -> None:
        w = self._win
        el = max(time.perf_counter() - w["t0"], 1e-9)
        rec = {"kind": "train", "epoch": self.state.epoch, "step": self.state.step,
               "train_minutes": self.state.train_seconds / 60.0, "loss": w["loss"] / max(w["n"], 1),
               "lr": self.scheduler.get_last_lr()[0], "grad_norm": gnorm,
               "audio_per_s": w["audio"] / el, "skipped_nonfinite_loss": self.state.skipped_nonfinite_loss}
        rss = resident_mb()
        if rss is not None:
            rec["rss_mb"] = round(rss)
        parts = {k: total / n for k, (total, n) in w["parts"].items() if n}
        rec.update(parts)
        self.metrics.write(rec)
        parts_text = "".join(f" {k} {v:.4f}" for k, v in parts.items())
        rss_text = f", {rss / 1024:.2f} GiB resident" if rss is not None else ""
        LOG.info("epoch %d step %d loss %.4f%s lr %.3e %.1f s audio/s%s", rec["epoch"], rec["step"],
                 rec["loss"], parts_text, rec["lr"], rec["audio_per_s"], rss_text)
        self._win = self._new_window()


def _fmt(metrics: dict[str, float]) -> str:
    """``dev_cer 23.4, dev_aid_acc 0.91, ...`` for the log."""
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
