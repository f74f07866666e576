"""``qifusion train``: set up data, units, CMVN, model and optimizer, run the loop, write the model dir.

Works alone (one process) and under ``torchrun`` (DDP, see :mod:`qifusion.train.ddp`). EXP receives the
resolved ``config.yaml``, ``units.txt``, ``accents.txt``, ``cmvn.json``, checkpoints, ``train.log``,
``train_log.jsonl``, TensorBoard events and, at the end, the model dir ``EXP/final``.
Rank 0 writes every file; the other ranks read the shared unit list and CMVN after a barrier (so a
multi-node run needs EXP on a shared file system).
"""

from __future__ import annotations

import collections
import math
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qifusion import malloc, omp
from qifusion.config import Config, ConfigError, load_config, save_config, to_dict
from qifusion.data.feature_cache import CACHE_DIR_NAME
from qifusion.data.synth_accents import corpus_licences
from qifusion.errors import UserError
from qifusion.modeldir import load_config_file, read_accents, save_model_dir, write_accents
from qifusion.train import checkpoint as ckpt
from qifusion.train.ddp import DistInfo, barrier, cleanup_distributed, cpu_cores, setup_distributed
from qifusion.train.logs import LOG, MetricsLog, setup_text_logging
from qifusion.train.loop import Trainer
from qifusion.train.scheduler import build_scheduler

CMVN_MAX_UTTS = 500  # CMVN from at most this many training utterances (a fixed seeded sample)


def train(
    *,
    config_path: Path,
    data_dir: Path,
    exp_dir: Path,
    resume: bool = False,
    device: str = "cpu",
    overrides: list[str] | None = None,
    init: Path | None = None,
) -> None:
    """Train a model; see ``docs/train.md``. Raises UserError on bad config, data or EXP state."""
    cfg = load_config(config_path, overrides or [])
    validate_train_config(cfg)
    info = setup_distributed(device=device)
    try:
        _train(cfg, info, data_dir=Path(data_dir), exp_dir=Path(exp_dir), resume=resume, init=init)
    finally:
        cleanup_distributed()


def validate_train_config(cfg: Config) -> None:
    """Check values of the ``train`` section (the config loader checks keys and types)."""
    t = cfg.train
    choices = {"optimizer": ("adam", "adamw"), "scheduler": ("warmuplr", "cosine"),
               "amp": ("none", "bf16", "fp16")}
    for key, allowed in choices.items():
        if getattr(t, key) not in allowed:
            raise ConfigError(f"config key 'train.{key}' must be one of {', '.join(allowed)}, "
                              f"got {getattr(t, key)!r}")
    for key in ("max_epochs", "accum_grad", "log_interval"):
        if getattr(t, key) < 1:
            raise ConfigError(f"config key 'train.{key}' must be >= 1, got {getattr(t, key)}")
    if t.lr <= 0:
        raise ConfigError(f"config key 'train.lr' must be > 0, got {t.lr}")
    if cfg.data.token_type not in ("char", "bpe"):
        raise ConfigError(f"config key 'data.token_type' must be char or bpe, got {cfg.data.token_type!r}")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _load_split(data_dir: Path, split: str, *, required: bool) -> list[Any]:
    """The split's utterances: from its shards' metadata when ``split/shards/shards.json`` exists."""
    from qifusion.data.manifest import load_data_dir
    from qifusion.data.shard_loader import shard_dir_of, shard_utterances

    path = data_dir / split
    if not path.exists():
        if required:
            raise UserError(f"data dir {data_dir} has no {split}/ split (expected {path})")
        return []
    shards = shard_dir_of(path)
    if shards is not None:
        return shard_utterances(shards)
    return load_data_dir(path, require_text=True, strict=False)


def _build_loader(data_dir: Path, split: str, utts: list[Any], *, cfg: Config, train: bool, info: DistInfo,
                  **kw: Any) -> Any:
    """``build_shard_loader`` for a sharded split (streamed sequentially), else the file ``build_loader``."""
    from qifusion.data.dataset import build_loader
    from qifusion.data.shard_loader import build_shard_loader, shard_dir_of

    shards = shard_dir_of(data_dir / split)
    common = {"cfg": cfg.data, "train": train, "seed": cfg.train.seed, "rank": info.rank,
              "world_size": info.world_size, **kw}
    feature_cache = common.pop("feature_cache", None)
    if shards is not None:
        LOG.info("%s: streaming tar shards from %s", split, shards)
        if feature_cache is not None:
            LOG.warning("data.feature_cache is not used with sharded data: fbank is computed on the fly")
        return build_shard_loader(shards, **common)
    return build_loader(utts, feature_cache=feature_cache, **common)


def _prepare_exp(cfg: Config, info: DistInfo, *, exp_dir: Path, train_utts: list[Any], init_src: Any,
                 resuming: bool, shard_dir: Path | None = None) -> None:
    """Rank 0 writes config.yaml, units.txt, accents.txt and cmvn.json into EXP (unless resuming)."""
    from qifusion.data.cmvn import cmvn_from_utterances, dither_floor, save_cmvn
    from qifusion.data.manifest import load_accents
    from qifusion.data.tokenizer import Tokenizer
    from qifusion.train.finetune import extend_tokenizer

    if not info.is_main:
        return
    if resuming:
        old = load_config_file(exp_dir / "config.yaml")
        for section in ("model", "data"):
            if to_dict(getattr(old, section)) != to_dict(getattr(cfg, section)):
                LOG.warning("the %s section differs from %s; the checkpoint's shapes must still match",
                            section, exp_dir / "config.yaml")
        save_config(cfg, exp_dir / "config.yaml")
        return
    save_config(cfg, exp_dir / "config.yaml")
    texts = [u.text for u in train_utts]
    accents = load_accents(train_utts)
    if init_src is not None and init_src.tokenizer is not None:
        tok = extend_tokenizer(init_src.tokenizer, texts)
        if tok is not init_src.tokenizer:
            LOG.warning("--init: the training text has %d unit(s) the init model lacks; added to the units",
                        tok.vocab_size - init_src.tokenizer.vocab_size)
    else:
        tok = Tokenizer.build(texts, token_type=cfg.data.token_type, bpe_vocab_size=cfg.data.bpe_vocab_size,
                              workdir=exp_dir)
    if init_src is not None and init_src.accents is not None and init_src.accents != accents:
        LOG.warning("--init: accent set changes from %s to %s (AID rows are copied by name)",
                    init_src.accents, accents)
    tok.save(exp_dir)
    write_accents(exp_dir / "accents.txt", accents)
    sample = list(train_utts)
    floor = dither_floor(cfg.data.dither, num_mel_bins=cfg.data.num_mel_bins)
    if shard_dir is not None:  # no random access: the first utterances of the (write-time shuffled) shards
        from qifusion.data.cmvn import compute_cmvn
        from qifusion.data.shard_loader import shard_cmvn_features

        feats = shard_cmvn_features(shard_dir, cfg=cfg.data, max_utts=CMVN_MAX_UTTS)
        mean, istd = compute_cmvn(f if floor is None else torch.maximum(f, floor) for f in feats)
        skipped = 0
    else:
        random.Random(cfg.train.seed).shuffle(sample)
        mean, istd, skipped = cmvn_from_utterances(sample, num_mel_bins=cfg.data.num_mel_bins,
                                                   sample_rate=cfg.data.sample_rate, max_utts=CMVN_MAX_UTTS,
                                                   floor=floor)
    save_cmvn(exp_dir, mean, istd, floor=floor)
    LOG.info("units: %d (%s); accents: %s; CMVN from %d utterances", tok.vocab_size, tok.token_type,
             accents, min(len(sample), CMVN_MAX_UTTS) - skipped)


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``cfg.train``'s Adam or AdamW over the model's trainable parameters, multi-tensor (``foreach``: the
    for-loop's arithmetic, bitwise, in fewer kernels; torch's ``fused`` kernel is not: docs/train.md)."""
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    cls = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=t.lr, weight_decay=t.weight_decay, foreach=True)


def _train(
    cfg: Config, info: DistInfo, *, data_dir: Path, exp_dir: Path, resume: bool, init: Path | None
) -> None:
    from qifusion.data.cmvn import load_cmvn, load_floor
    from qifusion.data.shard_loader import shard_dir_of
    from qifusion.data.tokenizer import Tokenizer
    from qifusion.models.model import QifusionModel
    from qifusion.train.evaluate import evaluate_dev
    from qifusion.train.finetune import load_matching, read_init_source

    setup_text_logging(exp_dir, rank=info.rank)
    latest = ckpt.latest_checkpoint(exp_dir) if exp_dir.is_dir() else None
    if latest is not None and not resume:
        raise UserError(f"{exp_dir} already holds checkpoints (latest {latest.name}): pass --resume to "
                        "continue, or choose another --exp")
    if resume and latest is None:
        LOG.warning("--resume: no checkpoint in %s; starting from scratch", exp_dir)
    resuming = latest is not None
    train_utts = _load_split(data_dir, "train", required=True)
    dev_utts = _load_split(data_dir, "dev", required=False)
    if not dev_utts:
        LOG.warning("no dev split in %s: no dev metrics, and `average --by dev_loss` will not work", data_dir)
    init_src = read_init_source(init) if init is not None and not resuming else None
    _prepare_exp(cfg, info, exp_dir=exp_dir, train_utts=train_utts, init_src=init_src, resuming=resuming,
                 shard_dir=shard_dir_of(data_dir / "train"))
    barrier(info)
    tokenizer = Tokenizer.load(exp_dir)
    accents = read_accents(exp_dir / "accents.txt")

    seed = cfg.train.seed
    seed_everything(seed)  # same initial weights on every rank
    model = QifusionModel(cfg.model, vocab_size=tokenizer.vocab_size, num_accents=len(accents))
    mean, istd = load_cmvn(exp_dir)
    model.encoder.set_cmvn(mean, istd, load_floor(exp_dir))
    if model.aid is not None:  # the training prior of the logit-adjusted AID loss
        counts = collections.Counter(getattr(u, "accent", None) for u in train_utts)
        model.aid.set_prior(torch.tensor([float(counts.get(a, 0)) for a in accents]))
    if init_src is not None:
        report = load_matching(model, init_src, units=tokenizer.units, accents=accents)
        LOG.info("--init %s: %s", init_src.path, report.summary())
    model.to(info.device)
    n_params = sum(p.numel() for p in model.parameters())
    LOG.info("model: %.2fM parameters on %s, world size %d, %d threads (%s; heap allocator: %s)",
             n_params / 1e6, info.device, info.world_size, torch.get_num_threads(), omp.describe(os.environ),
             malloc.describe())
    ddp_model: torch.nn.Module = model
    if info.distributed:
        ids = [info.local_rank] if info.device.type == "cuda" else None
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    seed_everything(seed + info.rank)  # training randomness (dropout, chunk sizes) may differ per rank

    cache_dir = exp_dir / CACHE_DIR_NAME if cfg.data.feature_cache else None
    train_loader = _build_loader(data_dir, "train", train_utts, cfg=cfg, train=True, info=info,
                                 tokenizer=tokenizer, accents=accents, feature_cache=cache_dir)
    dev_loader = _build_loader(data_dir, "dev", dev_utts, cfg=cfg, train=False, info=info,
                               tokenizer=tokenizer, accents=accents) if dev_utts else None
    prefill = cache_dir is not None and cfg.data.feature_cache_prefill
    filled = _prefill(train_loader, info=info) if prefill else None
    train_loader.set_epoch(1)
    steps_per_epoch = math.ceil(len(train_loader) / cfg.train.accum_grad)
    total = cfg.train.max_steps or cfg.train.max_epochs * steps_per_epoch
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(optimizer, name=cfg.train.scheduler, warmup_steps=cfg.train.warmup_steps,
                                total_steps=total, cooldown=cfg.train.cooldown,
                                time_budget=cfg.train.max_minutes > 0)

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        return evaluate_dev(m, dev_loader, tokenizer=tokenizer, dist_info=info) if dev_loader else {}

    metrics = MetricsLog(exp_dir, enabled=info.is_main)
    trainer = Trainer(model=ddp_model, optimizer=optimizer, scheduler=scheduler, train_loader=train_loader,
                      cfg=cfg.train, dist_info=info, exp_dir=exp_dir, evaluate=evaluate, metrics=metrics)
    if latest is not None:
        trainer.load_state_dict(ckpt.load_checkpoint(latest))
        metrics.truncate_after(trainer.state.step)
        LOG.info("resumed from %s (epoch %d, batch %d, step %d)", latest, trainer.state.epoch,
                 trainer.state.batch, trainer.state.step)
    if filled is not None:  # after a resume's truncation, at the step training starts from
        metrics.write({**filled, "epoch": trainer.state.epoch, "step": trainer.state.step})
    LOG.info("training on %d utterances (%.2f h), %d batches per epoch per rank", train_loader.num_utts,
             train_loader.total_duration / 3600, len(train_loader))
    if train_loader.skipped:
        LOG.warning("%s", train_loader.skip_summary())
    state = trainer.fit()
    if cache_dir is not None:
        barrier(info)  # every rank has read its last batch
        if info.is_main:
            shutil.rmtree(cache_dir, ignore_errors=True)
    dev = state.dev[-1] if state.dev else {}
    averaged = _average_last(model, exp_dir, cfg.train.average_last, evaluate=evaluate, info=info)
    if averaged is not None:
        metrics.write({"kind": "average", "epoch": state.epoch, "step": state.step, **averaged})
    metrics.close()
    if info.is_main:
        card = {"data": str(data_dir), "train_utts": train_loader.num_utts,
                "train_hours": round(train_loader.total_duration / 3600, 4), "epochs": state.epoch,
                "epoch_finished": state.epoch_done, "steps": state.step,
                "dev": {k: v for k, v in (averaged or dev).items() if k.startswith("dev_")},
                "skipped_nonfinite_loss": state.skipped_nonfinite_loss, "world_size": info.world_size,
                "init": str(init) if init else None}
        if averaged is not None:
            card.update(averaged=averaged["files"],
                        dev_last={k: v for k, v in dev.items() if k.startswith("dev_")})
        licences = corpus_licences(data_dir)  # the voices' licences bind the model too (issue 16)
        if licences:
            card["data_licences"] = licences
        out = save_model_dir(exp_dir / "final", model=model, config=cfg, tokenizer=tokenizer, accents=accents,
                             card=card)
        LOG.info("wrote model dir %s", out)
        if dev_utts and shard_dir_of(data_dir / "dev") is None:
            _calibrate(out, data_dir / "dev")
    barrier(info)


def _prefill(loader: Any, *, info: DistInfo) -> dict[str, Any] | None:
    """``data.feature_cache_prefill``: every rank computes its share of the cache on its share of the
    machine's cores, before the training clock starts. Returns the ``kind: features`` log record
    (this rank's counts; None with sharded data, which has no cache)."""
    processes = max(1, cpu_cores() // info.local_world_size)
    stats = loader.prefill_cache(processes=processes, progress=info.is_main)
    barrier(info)
    if stats is None:
        return None
    LOG.info("feature cache: %d of %d (utterance, speed factor) entries computed in %.2f minutes before "
             "training (rank %d; %d unreadable utterances)", stats.computed, stats.entries,
             stats.seconds / 60, info.rank, stats.failed)
    return {"kind": "features", "minutes": round(stats.seconds / 60, 3), "entries": stats.entries,
            "computed": stats.computed, "unreadable": stats.failed}


def _average_last(model: torch.nn.Module, exp_dir: Path, num: int, *,
                  evaluate: Callable[[torch.nn.Module], dict[str, float]],
                  info: DistInfo) -> dict[str, Any] | None:
    """``train.average_last``: load into ``model`` the average of the newest ``num`` checkpoints of
    ``exp_dir`` (every rank, after the last checkpoint is written) and measure dev again; returns
    ``{"files": [...], **dev metrics}``, or None when ``num`` < 2."""
    if num < 2:
        return None
    from qifusion.train.average import average_of, select_checkpoints

    barrier(info)
    chosen = select_checkpoints(exp_dir, num=num, by="last")
    model.load_state_dict(average_of(exp_dir, chosen))
    model.eval()
    with torch.no_grad():
        dev = evaluate(model)
    files = [e["file"] for e in chosen]
    LOG.info("final = average of %s: %s", ", ".join(files),
             ", ".join(f"{k} {v:.4g}" for k, v in dev.items()) or "no dev split")
    return {"files": files, **dev}


def _calibrate(model_dir: Path, dev_dir: Path) -> None:
    """``qifusion calibrate`` of the new model dir on dev: the accent ID's measured accuracy and calibrated
    probabilities, and the speech gate's threshold, which every output that names an accent relies on."""
    from qifusion.decode.calibrate import calibrate_model

    try:
        calibrate_model(model_dir, dev_dir, progress=False)
    except UserError as e:  # the model dir stays usable; outputs then say "accent ID not calibrated"
        LOG.warning("calibration on %s failed: %s (run `qifusion calibrate` by hand)", dev_dir, e)
