"""Typed dataclass configs with YAML load/save.

Every section is a dataclass; unknown keys are errors that name the full dotted key, so a typo in a
YAML file or a ``--set`` override never passes silently.

A config file has three sections::

    model: {encoder: {...}, accent: {...}, decoder: {...}, ctc_weight: 0.3, ...}
    data: {...}
    train: {...}
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from qifusion.errors import UserError
from qifusion.fileio import atomic_write_text


class ConfigError(UserError, ValueError):
    """A malformed config: unknown key, wrong type or invalid value (message names the key)."""


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------
@dataclass
class EncoderConfig:
    """Conformer encoder with dynamic chunk masking (U2/U2++)."""

    input_dim: int = 80
    output_size: int = 256
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 12
    dropout_rate: float = 0.1
    positional_dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.0
    # front end: "conv2d4" (x4), "conv2d6" (x6), "conv2d8" (x8) progressive sub-sampling
    subsampling: str = "conv2d4"
    # multiply the sub-sampled embedding by sqrt(output_size) (WeNet/ESPnet; docs/train.md "Recipe"). The
    # shipped configs set it; the default stays false so that model dirs written before it load unchanged
    embed_scale: bool = False
    # channels of the sub-sampling convolutions (0 = output_size, as WeNet). At d144 the x4 front end's
    # second 144->144 3x3 conv costs more than six Conformer blocks; fewer channels cut a CPU training step
    # (docs/train.md "Recipe"; icefall's Zipformer front end uses 8-128 channels for the same reason)
    subsampling_channels: int = 0
    cnn_module_kernel: int = 15
    # causal depthwise conv in the conv module (needed for streaming)
    causal: bool = True
    macaron: bool = True
    # dynamic chunk training: per batch full context or a random chunk size in 1..max_chunk
    use_dynamic_chunk: bool = True
    use_dynamic_left_chunk: bool = False
    max_chunk: int = 25
    # >0: always train with this chunk size (static streaming model); 0 = off
    static_chunk_size: int = 0


@dataclass
class AccentConfig:
    """The accent parts of Qifusion-Net; all off = the Conformer baseline."""

    use_laf: bool = True
    # 1-based encoder block indices read by the LAF (default: blocks 6..12)
    laf_layers: list[int] = field(default_factory=lambda: [6, 7, 8, 9, 10, 11, 12])
    laf_kernel: int = 3  # causal kernel length in time (frames after sub-sampling)
    laf_feature_kernel: int = 3  # kernel width over the feature axis (odd; centred)
    laf_channels: int = 4
    embed_dim: int = 256  # accent embedding size
    use_aid: bool = True
    aid_hidden: int = 0  # >0: hidden layer (ReLU) of the frame-level AID classifier; 0 = linear
    # logit-adjusted (class-balanced) AID loss: see qifusion/models/aid.py
    aid_balanced: bool = True
    # utterance decision: "posterior" (mean of frame posteriors, the paper's) or "logit" (softmax of the mean
    # frame logits, trained with an utterance-level loss too); see qifusion/models/aid.py
    aid_pooling: str = "posterior"
    use_fusion: bool = True
    # "acoustic_query": acoustic frames attend to accent embeddings (paper);
    # "accent_query": accent embeddings attend to acoustic frames
    fusion_direction: str = "acoustic_query"
    fusion_heads: int = 4
    fusion_ffn_units: int = 0  # >0: feed-forward sub-layer after the cross-attention
    dropout_rate: float = 0.1  # dropout inside LAF / fusion (training only)
    fuse_into_ctc: bool = False
    # oracle baseline: the true accent label is given to the model as an input embedding
    oracle_accent: bool = False


@dataclass
class DecoderConfig:
    """Transformer attention decoder (left-to-right, optional right-to-left as in U2++)."""

    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 6
    r_num_blocks: int = 0  # right-to-left blocks; built only when reverse_weight > 0
    dropout_rate: float = 0.1
    positional_dropout_rate: float = 0.1
    self_attention_dropout_rate: float = 0.0
    src_attention_dropout_rate: float = 0.0


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    accent: AccentConfig = field(default_factory=AccentConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    ctc_weight: float = 0.3
    aid_weight: float = 1.0  # see docs/model.md "Loss weights"
    reverse_weight: float = 0.0
    lsm_weight: float = 0.1  # label smoothing of the attention decoder

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check cross-field consistency; raise ConfigError naming the offending key."""
        enc, acc, dec = self.encoder, self.accent, self.decoder
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ConfigError(f"config key 'model.ctc_weight' must be in [0, 1], got {self.ctc_weight}")
        for name in ("aid_weight", "reverse_weight", "lsm_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"config key 'model.{name}' must be >= 0, got {getattr(self, name)}")
        if self.reverse_weight >= 1.0:
            raise ConfigError(f"config key 'model.reverse_weight' must be < 1, got {self.reverse_weight}")
        if acc.aid_pooling not in ("posterior", "logit"):
            raise ConfigError(
                "config key 'model.accent.aid_pooling' must be 'posterior' or 'logit', "
                f"got {acc.aid_pooling!r}"
            )
        if acc.fusion_direction not in ("acoustic_query", "accent_query"):
            raise ConfigError(
                "config key 'model.accent.fusion_direction' must be 'acoustic_query' or 'accent_query', "
                f"got {acc.fusion_direction!r}"
            )
        if acc.use_laf:
            if not acc.laf_layers:
                raise ConfigError("config key 'model.accent.laf_layers' must list at least one block")
            bad = [i for i in acc.laf_layers if not 1 <= i <= enc.num_blocks]
            if bad:
                raise ConfigError(
                    f"config key 'model.accent.laf_layers' has block(s) {bad} outside 1..{enc.num_blocks} "
                    f"(model.encoder.num_blocks = {enc.num_blocks}; indices are 1-based)"
                )
            if len(set(acc.laf_layers)) != len(acc.laf_layers):
                raise ConfigError(f"config key 'model.accent.laf_layers' repeats a block: {acc.laf_layers}")
            if acc.laf_kernel < 1:
                raise ConfigError(f"config key 'model.accent.laf_kernel' must be >= 1, got {acc.laf_kernel}")
            if acc.laf_feature_kernel < 1 or acc.laf_feature_kernel % 2 == 0:
                raise ConfigError(
                    f"config key 'model.accent.laf_feature_kernel' must be odd and >= 1, "
                    f"got {acc.laf_feature_kernel}"
                )
            if not (acc.use_aid or acc.use_fusion):
                raise ConfigError(
                    "config key 'model.accent.use_laf' is true but neither use_aid nor use_fusion is: "
                    "the LAF output would be unused"
                )
        if acc.use_fusion:
            if enc.output_size % acc.fusion_heads:
                raise ConfigError(
                    f"config key 'model.accent.fusion_heads' ({acc.fusion_heads}) must divide "
                    f"model.encoder.output_size ({enc.output_size})"
                )
            if self.ctc_weight >= 1.0 and not acc.fuse_into_ctc:
                raise ConfigError(
                    "config key 'model.accent.use_fusion' is true but ctc_weight is 1 (no attention "
                    "decoder) and fuse_into_ctc is false: the fusion output would be unused"
                )
        if acc.oracle_accent and (acc.use_laf or acc.use_aid or acc.use_fusion):
            raise ConfigError(
                "config key 'model.accent.oracle_accent' is for the baseline: set use_laf, use_aid and "
                "use_fusion to false"
            )
        if self.ctc_weight < 1.0 and enc.output_size % dec.attention_heads:
            raise ConfigError(
                f"config key 'model.decoder.attention_heads' ({dec.attention_heads}) must divide "
                f"model.encoder.output_size ({enc.output_size})"
            )
        if self.reverse_weight > 0 and dec.r_num_blocks <= 0:
            raise ConfigError(
                "config key 'model.reverse_weight' is > 0 but model.decoder.r_num_blocks is 0: "
                "set r_num_blocks to build the right-to-left decoder"
            )


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
@dataclass
class SpecAugConfig:
    enabled: bool = True
    num_freq_masks: int = 2
    max_freq_width: int = 10
    num_time_masks: int = 2
    max_time_width: int = 50
    # first training epoch (1-based) that is masked: a short run that still underfits learns faster without
    # SpecAugment, a long run gets it from this epoch on (docs/train.md "Recipe")
    start_epoch: int = 1

    def __post_init__(self) -> None:
        if self.start_epoch < 1:
            raise ConfigError(f"config key 'data.spec_aug.start_epoch' must be >= 1 (epochs count from 1), "
                              f"got {self.start_epoch}")


@dataclass
class DataConfig:
    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 1.0  # training only; decoding always uses 0
    token_type: str = "char"  # "char" or "bpe"
    bpe_vocab_size: int = 500
    max_duration: float = 120.0  # seconds of audio per batch (bucketing sampler; see bucket_augmented)
    max_utt_duration: float = 30.0  # longer utterances are skipped (and counted)
    min_utt_duration: float = 0.1
    num_buckets: int = 30  # equal-count duration buckets of the sampler (qifusion.data.sampler)
    # training: bucket and pack batches by each utterance's length after this epoch's silence padding and
    # speed perturbation (as icefall buckets speed-perturbed cuts by their own duration), so a batch's
    # utterances end together: ~4% padded frames instead of ~29% on the accents preset (docs/train.md)
    bucket_augmented: bool = True
    shuffle_buffer: int = 1000  # sharded data: utterances held by the streaming shuffle buffer
    speed_perturb: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])
    # training only: with this probability each, U(0, silence_pad_max) s of near-silence before/after
    silence_pad_prob: float = 0.5
    silence_pad_max: float = 2.0
    spec_aug: SpecAugConfig = field(default_factory=SpecAugConfig)
    # training only: vocal-tract-length perturbation of the fbank, factor log-uniform in [1/vtlp, vtlp];
    # 1 = off (qifusion.data.augment.vtlp_warp)
    vtlp: float = 1.0
    num_workers: int = 0
    # training only: the fbank of each (utterance, speed factor) is computed once and kept in EXP/fbank_cache
    # (float16; removed when training ends) instead of recomputed every epoch (qifusion.data.feature_cache)
    feature_cache: bool = False
    # with feature_cache: compute every (utterance, speed factor) entry before training starts, on all CPU
    # cores, instead of on first use inside the training steps; same batches and weights, the loader then
    # only reads entries (its minutes are logged apart from the training clock; docs/train.md)
    feature_cache_prefill: bool = False

    def __post_init__(self) -> None:
        if not self.vtlp >= 1.0:
            raise ConfigError(f"config key 'data.vtlp' must be >= 1 (warps in [1/vtlp, vtlp]; 1 = off), "
                              f"got {self.vtlp}")


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    seed: int = 1
    optimizer: str = "adamw"  # "adam" or "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-6
    scheduler: str = "warmuplr"  # "warmuplr" (inverse-sqrt) or "cosine"
    warmup_steps: int = 2000
    max_epochs: int = 50
    max_steps: int = 0  # >0: stop after this many optimizer steps
    max_minutes: float = 0.0  # >0: stop after this much training time (wall clock, dev passes excluded)
    # >0: the lr decays to 0 over this last fraction of the budget (max_minutes, else max_steps, else
    # max_epochs) and training stops when it gets there (train/scheduler.py)
    cooldown: float = 0.0
    grad_clip: float = 5.0
    accum_grad: int = 1
    amp: str = "none"  # "none", "bf16" (CUDA, or CPU with bf16 matmuls) or "fp16" (CUDA only)
    log_interval: int = 50
    save_interval_steps: int = 0  # >0: write EXP/step_N.pt every N steps
    keep_checkpoints: int = 0  # 0 = keep all
    dev_every_epoch: bool = True
    dev_every_steps: int = 0  # >0: also evaluate dev every N optimizer steps (learning curves)
    # >1: EXP/final holds the average of the newest N checkpoints (step or epoch ones, by step; model
    # averaging as in WeNet and icefall), its dev metrics measured again; 0 or 1: the last weights
    average_last: int = 0

    def __post_init__(self) -> None:
        if self.average_last < 0:
            raise ConfigError(f"config key 'train.average_last' must be >= 0, got {self.average_last}")
        if not 0.0 <= self.cooldown < 1.0:
            raise ConfigError(f"config key 'train.cooldown' must be in [0, 1) (a fraction of the budget), "
                              f"got {self.cooldown}")
        if self.keep_checkpoints > 0 and 2 * self.keep_checkpoints < self.average_last:
            raise ConfigError(f"config key 'train.average_last' ({self.average_last}) needs more checkpoints "
                              f"than 'train.keep_checkpoints' ({self.keep_checkpoints} step + "
                              f"{self.keep_checkpoints} epoch ones) keeps")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------------------------
# (de)serialisation
# --------------------------------------------------------------------------------------------
T = TypeVar("T")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to type annotation ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    return value


def _from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for k in data:
        if k not in names:
            raise ConfigError(
                f"unknown config key '{prefix}{k}' (valid keys here: {', '.join(sorted(names))})"
            )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def from_dict(data: dict[str, Any] | None, cls: type[T] = Config) -> T:  # type: ignore[assignment]
    """Build a config dataclass from a nested dict; unknown keys raise ConfigError."""
    return _from_dict(cls, data or {})


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> Config:
    """Load a YAML config file and apply ``key.sub=value`` overrides (YAML-parsed values)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    apply_overrides(data, overrides or [])
    try:
        return from_dict(data, Config)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> None:
    """Apply ``a.b.c=value`` strings to a nested dict in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{p}' is not a section")
        node[parts[-1]] = yaml.safe_load(raw)


def save_config(cfg: Config, path: str | os.PathLike[str]) -> None:
    """Write a config as YAML atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
