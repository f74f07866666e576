"""qifusion synth --preset heldout: the held-back evaluation set (reserved speakers, rates outside the
training range, texts unused by the benchmark/demo corpora at seed 0, only a test split)."""

from __future__ import annotations

import hashlib
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from qifusion.data import voices
from qifusion.data.manifest import load_data_dir
from qifusion.data.synth import plan_corpus, synthesize_corpus
from qifusion.data.synth_heldout import FAST_RATES, SLOW_RATES
from qifusion.data.synth_plan import RATE_RANGE
from qifusion.errors import UserError


def _plan(**kw):
    args = {"preset": "heldout", "utts_per_accent": None, "seed": 0, "accents": None} | kw
    return plan_corpus(**args)


def _variant(speaker: str) -> str:
    return speaker.split("_", 1)[1]


def test_heldout_only_test_split_with_reserved_speakers() -> None:
    items = _plan()
    assert len(items) == 320
    assert {i.split for i in items} == {"test"}
    assert all(i.wav.startswith(f"wav/test/{i.accent}/") for i in items)
    per_accent = Counter(i.accent for i in items)
    assert per_accent == {a: 40 for a in voices.ESPEAK_ACCENTS}
    for accent in voices.ESPEAK_ACCENTS:  # every reserved variant, 5 utterances each (balanced rounds)
        spk = Counter(_variant(i.speaker) for i in items if i.accent == accent)
        assert spk == {v: 5 for v in voices.RESERVED_VARIANTS}
    assert all(i.voice == voices.variant_voice(i.accent, _variant(i.speaker)) for i in items)


def test_heldout_rates_outside_training_range_half_slow_half_fast() -> None:
    items = _plan()
    for i in items:
        assert not RATE_RANGE[0] <= i.rate <= RATE_RANGE[1], i
        assert SLOW_RATES[0] <= i.rate <= SLOW_RATES[1] or FAST_RATES[0] <= i.rate <= FAST_RATES[1], i
    for accent in voices.ESPEAK_ACCENTS:
        slow = sum(i.rate <= SLOW_RATES[1] for i in items if i.accent == accent)
        assert slow == 20
    assert len({i.rate for i in items}) > 40  # drawn within the bands, not two fixed values


def test_heldout_disjoint_from_benchmark_and_demo_seed0() -> None:
    held = _plan()
    texts = [i.text for i in held]
    assert len(set(texts)) == len(texts)
    for preset in ("benchmark", "demo"):
        other = plan_corpus(preset=preset, utts_per_accent=None, seed=0, accents=None)
        assert not set(texts) & {i.text for i in other}, preset
        assert not {i.speaker for i in held} & {i.speaker for i in other}, preset
        assert not {_variant(i.speaker) for i in held} & {_variant(i.speaker) for i in other}, preset


def test_heldout_deterministic_for_seed_and_subset() -> None:
    a, b, c = _plan(seed=5), _plan(seed=5), _plan(seed=6)
    assert a == b
    assert [i.text for i in a] != [i.text for i in c]
    assert [i.rate for i in a] != [i.rate for i in c]
    sub = _plan(utts_per_accent=6, accents=["en-029", "en-us"])
    assert Counter(i.accent for i in sub) == {"en-us": 6, "en-029": 6}  # --utts-per-accent overrides
    assert sum(i.rate <= SLOW_RATES[1] for i in sub) == 6


def test_heldout_bad_sizes_and_missing_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="at least 1 for preset 'heldout'"):
        _plan(utts_per_accent=-1)
    with pytest.raises(UserError, match=r"needs 40000 distinct held-back sentences but only \d+"):
        _plan(utts_per_accent=5000)
    real = voices.available_variants
    monkeypatch.setattr(voices, "available_variants",
                        lambda names, **kw: [n for n in real(names, **kw) if n != "linda"])
    with pytest.raises(UserError, match=r"reserved espeak-ng variant\(s\) linda missing"):
        _plan()


def _md5(voice: str) -> str:
    out = subprocess.run(["espeak-ng", "-v", voice, "--stdout", "hello there"], capture_output=True,
                         check=True).stdout
    return hashlib.md5(out).hexdigest()


def test_reserved_variants_exist_and_every_heldout_voice_is_distinct() -> None:
    """An unknown or dropped variant sounds exactly like the base voice: all 64 held-back voices must
    differ from each other and from the 8 base voices."""
    names = sorted(voices.RESERVED_VARIANTS)
    assert voices.available_variants(names) == []  # never offered to the other presets
    assert voices.available_variants(names, allow_reserved=True) == names
    held = sorted({i.voice for i in _plan()})
    assert len(held) == 64
    digests = {_md5(v) for v in held}
    assert len(digests) == 64
    assert not digests & {_md5(a) for a in voices.ESPEAK_ACCENTS}


def test_en_gb_variant_needs_the_file_name() -> None:
    """The espeak-ng behaviour behind VARIANT_BASE: "en-gb+m2" ignores the variant, "en+m2" does not,
    and "en" is the same voice as "en-gb"."""
    assert _md5("en-gb+m2") == _md5("en-gb") == _md5("en")
    assert _md5("en+m2") != _md5("en")
    assert voices.variant_voice("en-gb", "m2") == "en+m2"
    assert voices.variant_voice("en-gb-x-rp", "m2") == "en-gb-x-rp+m2"


def test_heldout_writes_only_a_test_split(tmp_path: Path) -> None:
    summary = synthesize_corpus(out_dir=tmp_path, preset="heldout", utts_per_accent=2, seed=0, jobs=1,
                                accents=["en-gb-scotland"], progress=False)
    assert summary.ok and summary.generated == 2
    assert summary.counts == {"test": {"en-gb-scotland": 2}}
    assert "train" not in summary.describe() and "test " in summary.describe()
    assert not (tmp_path / "train").exists() and not (tmp_path / "dev").exists()
    utts = load_data_dir(tmp_path / "test")
    assert len(utts) == 2 and {_variant(u.speaker) for u in utts} <= voices.RESERVED_VARIANTS
    assert {u.utt_id for u in load_data_dir(tmp_path / "test" / "cuts.jsonl.gz")} == {u.utt_id for u in utts}


def test_benchmark_en_gb_speakers_really_use_their_variants() -> None:
    """Every preset's en-gb speakers go through variant_voice, so the variant is applied (not ignored)."""
    spk = voices.espeak_speakers(["en-gb", "en-us"])
    for split, speakers in spk.items():
        gb = [s.voice for s in speakers if s.accent == "en-gb"]
        assert gb and all(v.startswith("en+") for v in gb), split
        assert all(s.voice.startswith("en-us+") for s in speakers if s.accent == "en-us")
    assert _md5(spk["train"][0].voice) != _md5(spk["train"][1].voice)
