"""The training feature cache (``data.feature_cache``): what an entry holds, cold == warm, workers, repair,
and the prefill before training (``data.feature_cache_prefill``)."""

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

from qifusion.config import DataConfig, SpecAugConfig
from qifusion.data.augment import draw_padding, pad_silence, speed_perturb, utt_rng
from qifusion.data.dataset import build_loader, utterance_features
from qifusion.data.feature_cache import FeatureCache, prefill
from qifusion.data.features import compute_fbank
from qifusion.data.tokenizer import Tokenizer
from tests.test_dataset import (
    ACCENTS,
    corpus,  # noqa: F401  (the fixture: 14 short tone utterances)
)


@pytest.fixture(scope="module")
def utts(corpus):  # noqa: F811  (test_dataset's fixture)
    return corpus[1]


def _cfg(**kw):
    base = dict(max_duration=2.0, num_buckets=2, speed_perturb=[0.9, 1.0, 1.1], dither=1.0, vtlp=1.2,
                silence_pad_prob=0.5, silence_pad_max=0.5,
                spec_aug=SpecAugConfig(max_time_width=10, start_epoch=2))
    base.update(kw)
    return DataConfig(**base)


def _epochs(utts, cache_dir, *, workers=0, epochs=(1, 2, 3), prefill_processes=0):
    tok = Tokenizer.build([u.text for u in utts])
    loader = build_loader(utts, cfg=_cfg(num_workers=workers), tokenizer=tok, accents=ACCENTS, train=True,
                          seed=5, feature_cache=cache_dir)
    if prefill_processes:
        stats = loader.prefill_cache(processes=prefill_processes)
        assert (stats.entries, stats.computed, stats.failed) == (3 * len(utts), 3 * len(utts), 0)
    out = []
    for e in epochs:
        loader.set_epoch(e)
        out += list(loader)
    return out


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.utt_ids == y.utt_ids
        assert torch.equal(x.feats, y.feats) and torch.equal(x.feats_lens, y.feats_lens)


def test_cold_warm_and_workers_give_the_same_batches(utts, tmp_path):
    cold = _epochs(utts, tmp_path / "c")
    entries = sorted((tmp_path / "c").rglob("*.npy"))
    assert len(utts) <= len(entries) <= 3 * len(utts)  # one per (utterance, speed factor) drawn
    assert not list((tmp_path / "c").rglob("*.tmp"))  # atomic writes leave no temporaries
    stamps = [p.stat().st_mtime_ns for p in entries]
    _same(cold, _epochs(utts, tmp_path / "c"))  # warm: read back, nothing rewritten
    assert [p.stat().st_mtime_ns for p in entries] == stamps
    _same(cold, _epochs(utts, tmp_path / "w", workers=2))  # cold again, in two loader processes
    # a loader without the cache computes other frames (dither and padding are drawn differently) ...
    plain = build_loader(utts, cfg=_cfg(), tokenizer=Tokenizer.build([u.text for u in utts]), accents=ACCENTS,
                         train=True, seed=5)
    plain.set_epoch(1)
    assert not torch.equal(next(iter(plain)).feats, cold[0].feats)
    # ... and evaluation never uses it
    dev = build_loader(utts, cfg=_cfg(), tokenizer=Tokenizer.build([u.text for u in utts]), accents=ACCENTS,
                       train=False, seed=5, feature_cache=tmp_path / "dev")
    dev.set_epoch(0)
    list(dev)
    assert not (tmp_path / "dev").exists()


@pytest.mark.parametrize("processes", [1, 2])
def test_a_prefilled_cache_gives_the_batches_of_a_lazy_one(utts, tmp_path, processes):
    lazy = _epochs(utts, tmp_path / "lazy")
    full = tmp_path / "full"
    _same(lazy, _epochs(utts, full, prefill_processes=processes))  # every speed factor computed first
    entries = sorted(full.rglob("*.npy"))
    assert len(entries) == 3 * len(utts) and not list(full.rglob("*.tmp"))
    lazy_entries = sorted(p.relative_to(tmp_path / "lazy") for p in (tmp_path / "lazy").rglob("*.npy"))
    for rel in lazy_entries:  # the entries training drew are the same bytes either way
        assert (full / rel).read_bytes() == (tmp_path / "lazy" / rel).read_bytes()
    stamps = [p.stat().st_mtime_ns for p in entries]
    again = prefill(FeatureCache(full, cfg=_cfg(), seed=5), utts, processes=processes)
    assert (again.entries, again.computed) == (3 * len(utts), 0)  # a resumed run computes nothing twice
    assert [p.stat().st_mtime_ns for p in entries] == stamps


def test_prefill_counts_unreadable_utterances_and_goes_on(utts, tmp_path, caplog):
    bad = dataclasses.replace(utts[0], utt_id="broken", audio=str(tmp_path / "missing.wav"))
    cache = FeatureCache(tmp_path / "c", cfg=_cfg(speed_perturb=[]), seed=0)
    with caplog.at_level("WARNING", logger="qifusion.data.feature_cache"):
        stats = prefill(cache, [bad, *utts[1:3]], processes=2)
    assert (stats.entries, stats.computed, stats.failed) == (3, 2, 1)  # no speed perturbation: factor 1.0
    assert "missing.wav" in caplog.text
    assert len(list((tmp_path / "c").rglob("*.npy"))) == 2


def test_an_entry_is_the_fbank_of_the_speed_perturbed_audio(utts, tmp_path):
    u = utts[3]
    x, _ = sf.read(u.audio, dtype="float32")
    cfg = _cfg(dither=0.0, vtlp=1.0, silence_pad_prob=0.0, speed_perturb=[1.1],
               spec_aug=SpecAugConfig(enabled=False))
    feats, seconds = FeatureCache(tmp_path, cfg=cfg, seed=0).train_features(u, lambda: x, epoch=4)
    ref = compute_fbank(speed_perturb(x, 1.1))
    assert feats.shape == ref.shape and seconds == pytest.approx(ref.shape[0] / 100)
    torch.testing.assert_close(feats, ref, rtol=2e-3, atol=2e-3)  # float16 storage
    plain, _ = utterance_features(x, cfg=cfg, train=True, seed=0, epoch=4, utt_id=u.utt_id)
    torch.testing.assert_close(feats, plain, rtol=2e-3, atol=2e-3)


def test_padding_is_appended_in_the_feature_domain(utts, tmp_path):
    u = utts[0]
    x, _ = sf.read(u.audio, dtype="float32")
    cfg = _cfg(silence_pad_prob=1.0, silence_pad_max=1.0, vtlp=1.0, spec_aug=SpecAugConfig(enabled=False),
               speed_perturb=[1.0])
    cache = FeatureCache(tmp_path, cfg=cfg, seed=0)
    feats, _ = cache.train_features(u, lambda: x, epoch=1)
    speech = cache.fbank(u, 1.0, lambda: x)
    lead, trail = draw_padding(max_seconds=1.0, prob=1.0, rng=utt_rng(0, 1, u.utt_id))
    n_lead, n_trail = round(lead.size / 160), round(trail.size / 160)
    assert feats.shape[0] == n_lead + speech.shape[0] + n_trail
    assert torch.equal(feats[n_lead : n_lead + speech.shape[0]], speech)
    assert feats[:n_lead].mean() < speech.mean() - 3  # near-silence frames around the speech


def test_unreadable_entry_is_computed_again(utts, tmp_path):
    u = utts[1]
    x, _ = sf.read(u.audio, dtype="float32")
    cache = FeatureCache(tmp_path, cfg=_cfg(), seed=0)
    first = cache.fbank(u, 0.9, lambda: x)
    cache.path(u, 0.9).write_bytes(b"\x93NUMPY garbage")  # a torn or corrupt file
    assert torch.equal(cache.fbank(u, 0.9, lambda: x), first)
    assert torch.equal(FeatureCache(tmp_path, cfg=_cfg(), seed=0).fbank(u, 0.9, lambda: 1 / 0), first)
    assert cache.path(u, 0.9) != FeatureCache(tmp_path, cfg=_cfg(), seed=1).path(u, 0.9)  # seed in the key
    assert cache.path(u, 0.9) != cache.path(u, 1.1)


def test_an_entry_that_cannot_be_stored_is_used_unstored_with_one_warning(utts, tmp_path, caplog):
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache dir should be")  # every entry's mkdir fails (like a full disk)
    x, _ = sf.read(utts[1].audio, dtype="float32")
    want = FeatureCache(tmp_path / "ok", cfg=_cfg(), seed=0).fbank(utts[1], 0.9, lambda: x)
    cache = FeatureCache(blocked, cfg=_cfg(), seed=0)
    with caplog.at_level("WARNING", logger="qifusion.data.feature_cache"):
        got = [cache.fbank(u, 0.9, lambda u=u: sf.read(u.audio, dtype="float32")[0]) for u in utts[1:4]]
    assert torch.equal(got[0], want)  # the same (float16-rounded) frames as a stored entry
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and str(blocked) in warnings[0] and "cannot store" in warnings[0]


def test_pad_silence_is_draw_padding_around_the_samples():
    x = np.full(800, 0.25, dtype=np.float32)
    lead, trail = draw_padding(max_seconds=0.5, prob=0.7, rng=utt_rng(3, 1, "u"))
    np.testing.assert_array_equal(pad_silence(x, max_seconds=0.5, prob=0.7, rng=utt_rng(3, 1, "u")),
                                  np.concatenate([lead, x, trail]))
