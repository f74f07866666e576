"""Batching: shapes/padding, duration limit, determinism, exact resume, workers, DDP shards, skips,
and the augmentation it uses."""

import numpy as np
import pytest
import soundfile as sf
import torch

from qifusion.config import DataConfig, SpecAugConfig
from qifusion.data.augment import augmented_seconds, spec_augment, speed_perturb, utt_rng
from qifusion.data.dataset import build_loader
from qifusion.data.manifest import Utterance
from qifusion.data.sampler import make_batches, shard_batches
from qifusion.data.tokenizer import Tokenizer

ACCENTS = ["en-gb", "en-us"]
WORDS = ["a", "cat", "sat", "on", "the", "mat", "don't", "go"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    utts = []
    for i in range(14):
        dur = 0.3 + 0.07 * i
        t = np.arange(int(dur * 16000)) / 16000
        x = 0.2 * np.sin(2 * np.pi * (150 + 20 * i) * t) + 0.01 * rng.standard_normal(t.size)
        path = d / f"u{i:02d}.wav"
        sf.write(path, x.astype(np.float32), 16000, subtype="PCM_16")
        text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(2 + i % 3))
        utts.append(Utterance(f"utt{i:02d}", str(path), text=text, accent=ACCENTS[i % 2]))
    return d, utts


def _cfg(**kw):
    base = dict(max_duration=2.0, num_buckets=3, speed_perturb=[0.9, 1.0, 1.1], dither=1.0,
                spec_aug=SpecAugConfig(max_time_width=10), min_utt_duration=0.1, max_utt_duration=10.0)
    base.update(kw)
    return DataConfig(**base)


def _loader(utts, *, train=True, seed=3, **kw):
    tok = Tokenizer.build([u.text for u in utts if u.text])
    cfg_kw = {k: kw.pop(k) for k in list(kw) if k in DataConfig.__dataclass_fields__}
    cfg = _cfg(**cfg_kw)
    return build_loader(utts, cfg=cfg, tokenizer=tok, accents=ACCENTS, train=train, seed=seed, **kw)


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def _same(a, b):
    assert a.utt_ids == b.utt_ids
    for name in ("feats", "feats_lens", "tokens", "token_lens", "accents", "durations"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_batch_shapes_and_padding(corpus):
    _, utts = corpus
    loader = _loader(utts, train=False)
    tok = Tokenizer.build([u.text for u in utts])
    by_id = {u.utt_id: u for u in utts}
    seen = []
    for b in loader:
        B = len(b)
        assert b.feats.shape == (B, int(b.feats_lens.max()), 80)
        assert b.tokens.shape == (B, int(b.token_lens.max()))
        for k, uid in enumerate(b.utt_ids):
            n, L = int(b.feats_lens[k]), int(b.token_lens[k])
            assert torch.all(b.feats[k, n:] == 0)
            assert torch.all(b.tokens[k, L:] == -1) and torch.all(b.tokens[k, :L] >= 0)
            assert tok.decode(b.tokens[k, :L].tolist()) == by_id[uid].text
            assert int(b.accents[k]) == ACCENTS.index(by_id[uid].accent)
            assert abs(float(b.durations[k]) - (0.3 + 0.07 * int(uid[3:]))) < 1e-3
            assert n == round(float(b.durations[k]) * 100)
        assert float(b.durations.sum()) <= 2.0 + 1e-6 or B == 1  # max_duration respected
        seen += b.utt_ids
    assert sorted(seen) == sorted(by_id)  # evaluation: every utterance exactly once
    assert loader.skipped == {}


def test_make_batches_duration_limit_and_coverage():
    durs = [*np.random.default_rng(1).uniform(0.5, 6.0, size=200).tolist(), 9.0]
    batches = make_batches(durs, max_duration=8.0, num_buckets=5, shuffle=True, seed=1, epoch=2)
    assert sorted(i for b in batches for i in b) == list(range(201))
    for b in batches:
        assert sum(durs[i] for i in b) <= 8.0 or len(b) == 1
    assert make_batches(durs, max_duration=8.0, num_buckets=5, shuffle=True, seed=1, epoch=2) == batches
    assert make_batches(durs, max_duration=8.0, num_buckets=5, shuffle=True, seed=1, epoch=3) != batches


def test_same_seed_same_batches_and_epochs_differ(corpus):
    _, utts = corpus
    a, b = _loader(utts, seed=5), _loader(utts, seed=5)
    ea, eb = _epoch(a, 0), _epoch(b, 0)
    assert len(ea) == len(a) > 1
    for x, y in zip(ea, eb, strict=True):
        _same(x, y)
    e1 = _epoch(a, 1)
    assert [x.utt_ids for x in e1] != [x.utt_ids for x in ea]
    # augmentation: train feats differ from clean eval feats of the same utterance
    clean = {u: f for bb in _loader(utts, train=False) for u, f in zip(bb.utt_ids, bb.feats, strict=True)}
    x = ea[0]
    n = int(x.feats_lens[0])
    assert x.feats[0, :n].shape != clean[x.utt_ids[0]][:n].shape or not torch.equal(x.feats[0, :n],
                                                                                     clean[x.utt_ids[0]][:n])


def test_resume_mid_epoch_equals_uninterrupted(corpus):
    _, utts = corpus
    ref = _loader(utts)
    full = _epoch(ref, 0) + _epoch(ref, 1)
    run = _loader(utts)
    run.set_epoch(0)
    it = iter(run)
    first = [next(it), next(it)]
    state = run.state_dict()
    assert state["epoch"] == 0 and state["pos"] == 2
    del it, run  # "killed"
    resumed = _loader(utts)
    resumed.load_state_dict(state)
    rest = _epoch(resumed, 0)  # set_epoch(same epoch) keeps the loaded position
    after = first + rest + _epoch(resumed, 1)
    assert len(after) == len(full)
    for x, y in zip(after, full, strict=True):
        _same(x, y)
    # a checkpoint taken after the last batch of an epoch resumes into an empty remainder
    state = resumed.state_dict()
    again = _loader(utts)
    again.load_state_dict(state)
    assert _epoch(again, 1) == [] and len(_epoch(again, 2)) == len(_epoch(ref, 2))


def test_workers_equal_in_process(corpus):
    _, utts = corpus
    a = _epoch(_loader(utts, num_workers=0), 1)
    b = _epoch(_loader(utts, num_workers=2), 1)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        _same(x, y)


def test_ddp_ranks_equal_and_disjoint(corpus):
    _, utts = corpus
    for train in (True, False):
        shards = [_loader(utts, train=train, rank=r, world_size=3, max_duration=1.5) for r in range(3)]
        ids = [s.batch_utt_ids() for s in shards]
        assert len({len(s) for s in shards}) == 1 and len(shards[0]) > 0
        flat = [set(u for b in r for u in b) for r in ids]
        if train:  # dropped remainder: disjoint, nothing repeated
            assert not (flat[0] & flat[1]) and not (flat[0] & flat[2]) and not (flat[1] & flat[2])
        else:  # evaluation pads by repeating: nothing lost
            assert set().union(*flat) == {u.utt_id for u in utts}
    assert shard_batches([[0], [1]], rank=2, world_size=3, pad=False) == [[0]]  # fewer batches than ranks


def test_skips_are_counted_with_messages(corpus, tmp_path):
    _, utts = corpus
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav file")
    extra = [
        Utterance("x_accent", utts[0].audio, text="a cat", accent="fr"),
        Utterance("x_empty", utts[0].audio, text="   ", accent="en-us"),
        Utterance("x_notext", utts[0].audio, text=None, accent="en-us"),
        Utterance("x_missing", str(tmp_path / "nope.wav"), text="a cat", accent="en-us"),
        Utterance("x_corrupt_late", str(bad), text="a cat", accent="en-us", duration=0.5),
        Utterance("x_long", utts[0].audio, text="a cat", accent=None, duration=20.0),
        Utterance("x_short", utts[0].audio, text="a cat", accent=None, start=0.0, end=0.05),
        Utterance("x_noaccent", utts[0].audio, text="a cat", accent=None),
    ]
    loader = _loader(utts + extra)
    assert loader.skipped == {"unknown_accent": 1, "empty_transcript": 1, "missing_transcript": 1,
                              "unreadable": 1, "too_long": 1, "too_short": 1}
    ex = loader.skip_examples
    assert "x_accent" in ex["unknown_accent"] and "'fr'" in ex["unknown_accent"]
    assert "x_missing" in ex["unreadable"] and "not found" in ex["unreadable"]
    batches = _epoch(loader, 0)
    got = {u for b in batches for u in b.utt_ids}
    assert "x_noaccent" in got and "x_corrupt_late" not in got
    acc = {u: int(a) for b in batches for u, a in zip(b.utt_ids, b.accents, strict=True)}
    assert acc["x_noaccent"] == -1
    assert loader.skipped["unreadable"] == 2  # read-time failure counted too
    assert any("x_corrupt_late" in m for b in batches for m in b.failed.values())
    # evaluation keeps utterances without transcript (empty targets) and long ones
    ev = _loader(utts + extra, train=False)
    assert "missing_transcript" not in ev.skipped and "too_long" not in ev.skipped


def test_augmentation_is_function_of_seed_epoch_utt():
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    assert speed_perturb(x, 1.1).shape[0] == round(16000 / 1.1)
    assert speed_perturb(x, 0.9).shape[0] == round(16000 / 0.9)
    assert speed_perturb(x, 1.0) is x
    a = utt_rng(1, 2, "utt7").random(4)
    utt_rng(1, 2, "other").random(100)  # drawing for another utterance changes nothing
    assert np.array_equal(a, utt_rng(1, 2, "utt7").random(4))
    assert not np.array_equal(a, utt_rng(1, 3, "utt7").random(4))
    feats = torch.randn(200, 80)
    cfg = SpecAugConfig(num_freq_masks=2, max_freq_width=10, num_time_masks=2, max_time_width=30)
    m1 = spec_augment(feats, cfg, utt_rng(0, 0, "u"))
    m2 = spec_augment(feats, cfg, utt_rng(0, 0, "u"))
    assert torch.equal(m1, m2) and not torch.equal(m1, feats)
    changed = m1 != feats
    cols, rows = changed.all(0).sum(), changed.all(1).sum()
    assert 0 < cols <= 20 and rows <= 2 * min(30, 40)


def test_pad_silence_is_seeded_and_quiet():
    import numpy as np

    from qifusion.data.augment import pad_silence, utt_rng

    x = np.full(1600, 0.5, dtype=np.float32)
    a = pad_silence(x, max_seconds=1.0, prob=1.0, rng=utt_rng(1, 2, "u"))
    b = pad_silence(x, max_seconds=1.0, prob=1.0, rng=utt_rng(1, 2, "u"))
    np.testing.assert_array_equal(a, b)
    assert a.shape[0] > x.shape[0]
    start = int(np.flatnonzero(a == 0.5)[0])
    assert np.array_equal(a[start : start + 1600], x)  # speech kept intact, in one piece
    pad = np.concatenate([a[:start], a[start + 1600 :]])
    assert pad.size == a.size - 1600 and np.sqrt(np.mean(pad**2)) < 10 ** (-49 / 20)
    np.testing.assert_array_equal(pad_silence(x, max_seconds=1.0, prob=0.0, rng=utt_rng(1, 2, "u")), x)


def test_spec_augment_starts_at_its_epoch():
    from qifusion.config import ConfigError
    from qifusion.data.dataset import utterance_features

    x = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    late = DataConfig(speed_perturb=[1.0], spec_aug=SpecAugConfig(start_epoch=3, max_time_width=30))
    off = DataConfig(speed_perturb=[1.0], spec_aug=SpecAugConfig(enabled=False))

    def feats(cfg: DataConfig, epoch: int) -> torch.Tensor:
        return utterance_features(x, cfg=cfg, train=True, seed=0, epoch=epoch, utt_id="u")[0]

    assert torch.equal(feats(late, 2), feats(off, 2))  # before its epoch: the same draws, no masks
    assert not torch.equal(feats(late, 3), feats(off, 3))  # from its epoch on: masked
    with pytest.raises(ConfigError, match=r"data\.spec_aug\.start_epoch"):
        SpecAugConfig(start_epoch=0)


def test_vtlp_moves_a_tone_like_a_scaled_vocal_tract():
    from qifusion.data.augment import vtlp_warp
    from qifusion.data.features import compute_fbank

    t = np.arange(16000) / 16000

    def tone(hz: float) -> torch.Tensor:
        return compute_fbank((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), sample_rate=16000)

    peak = lambda f: int(f.mean(0).argmax())  # noqa: E731
    f = tone(1000.0)
    assert torch.equal(vtlp_warp(f, 1.0), f)
    for alpha in (0.8, 1.2):  # the 1 kHz tone lands in the bin of a 1 kHz x alpha tone, +-1 bin
        warped = vtlp_warp(f, alpha)
        assert warped.shape == f.shape
        assert abs(peak(warped) - peak(tone(1000.0 * alpha))) <= 1, alpha
        assert peak(warped) != peak(f)
    with pytest.raises(ValueError, match="VTLP factor"):
        vtlp_warp(f, 0.0)


def test_vtlp_in_training_features_is_drawn_per_utterance():
    from qifusion.config import ConfigError
    from qifusion.data.dataset import utterance_features

    x = np.random.default_rng(2).standard_normal(16000).astype(np.float32) * 0.1
    base = dict(speed_perturb=[1.0], spec_aug=SpecAugConfig(enabled=False))
    on, off = DataConfig(vtlp=1.2, **base), DataConfig(**base)

    def feats(cfg: DataConfig, utt: str, *, train: bool = True) -> torch.Tensor:
        return utterance_features(x, cfg=cfg, train=train, seed=0, epoch=1, utt_id=utt)[0]

    assert not torch.equal(feats(on, "u"), feats(off, "u"))
    assert torch.equal(feats(on, "u"), feats(on, "u"))  # a pure function of (seed, epoch, utterance)
    assert not torch.equal(feats(on, "u"), feats(on, "v"))
    assert torch.equal(feats(on, "u", train=False), feats(off, "u", train=False))  # decoding: never
    with pytest.raises(ConfigError, match=r"data\.vtlp"):
        DataConfig(vtlp=0.9)


@pytest.mark.parametrize("cached", [False, True])
def test_training_batches_are_packed_by_their_augmented_lengths(corpus, tmp_path, cached):
    """``bucket_augmented``: the sampler replays each utterance's padding and speed draws, so the lengths it
    buckets and packs by are the lengths of the features the batch then holds (and max_duration holds)."""
    _, utts = corpus
    kw = dict(silence_pad_prob=1.0, silence_pad_max=0.4, speed_perturb=[0.9, 1.1], bucket_augmented=True)
    loader = _loader(utts, **kw, feature_cache=tmp_path / "cache" if cached else None)
    cfg = _cfg(**kw)
    seconds = {u.utt_id: int((0.3 + 0.07 * int(u.utt_id[3:])) * 16000) / 16000 for u in utts}  # the fixture's
    for epoch in (0, 1):
        batches = _epoch(loader, epoch)
        assert sorted(u for b in batches for u in b.utt_ids) == sorted(seconds)
        for b in batches:
            planned = [augmented_seconds(seconds[u], cfg=cfg, seed=3, epoch=epoch, utt_id=u)
                       for u in b.utt_ids]
            assert b.feats_lens.tolist() == pytest.approx([100 * p for p in planned], abs=3)
            assert sum(planned) <= cfg.max_duration or len(b) == 1
    plain = _loader(utts, **{**kw, "bucket_augmented": False})
    plain.set_epoch(0)
    loader.set_epoch(0)
    assert plain.batch_indices() != loader.batch_indices()  # the stretched lengths change the packing
