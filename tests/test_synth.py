"""qifusion synth: planning, splits, determinism, resume, failures, output format (tiny corpora)."""

from __future__ import annotations

import hashlib
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qifusion.data import synth as synth_mod
from qifusion.data import voices
from qifusion.data.manifest import load_data_dir
from qifusion.data.synth import plan_corpus, synthesize_corpus
from qifusion.data.synth_plan import split_sizes
from qifusion.data.synth_text import normalize_sentence
from qifusion.errors import DataError, UserError

SPLITS = ("train", "dev", "test")


def _variant(voice: str) -> str:
    return voice.split("+", 1)[1]


def _read_splits(root: Path) -> dict[str, list]:
    return {s: load_data_dir(root / s) for s in SPLITS}


# ---- text ---------------------------------------------------------------------------------
def test_normalize_sentence() -> None:
    assert normalize_sentence("Don't look back -- something might be gaining on you.") == (
        "don't look back something might be gaining on you")
    assert normalize_sentence("'Tis the season, they said.") == "tis the season they said"
    assert normalize_sentence("He paid 20 dollars for the old book") is None  # digits
    assert normalize_sentence("Mr. Smith went to the market today") is None  # abbreviation
    assert normalize_sentence("the TV was on in the next room") is None  # spelled-out letters
    assert normalize_sentence("too short here") is None
    assert normalize_sentence(" ".join(["word"] * 21)) is None


# ---- planning -----------------------------------------------------------------------------
def test_split_sizes() -> None:
    assert split_sizes(6, eval_frac=0.1) == {"train": 4, "dev": 1, "test": 1}
    assert split_sizes(100, eval_frac=0.1) == {"train": 80, "dev": 10, "test": 10}
    with pytest.raises(UserError, match="at least 3"):
        split_sizes(2, eval_frac=0.1)


def test_plan_deterministic_for_seed() -> None:
    a = plan_corpus(preset="demo", utts_per_accent=12, seed=3, accents=None)
    b = plan_corpus(preset="demo", utts_per_accent=12, seed=3, accents=None)
    c = plan_corpus(preset="demo", utts_per_accent=12, seed=4, accents=None)
    assert a == b
    assert len(a) == 8 * 12
    assert [i.text for i in a] != [i.text for i in c]


def test_benchmark_plan_mix_disjoint_and_reserved() -> None:
    items = plan_corpus(preset="benchmark", utts_per_accent=None, seed=0, accents=None)
    texts = [i.text for i in items]
    assert len(set(texts)) == len(texts)  # each sentence once, hence disjoint across splits
    train = Counter(i.accent for i in items if i.split == "train")
    assert len(train) == 8
    assert 0.38 < train["en-us"] / sum(train.values()) < 0.42  # KeSpeech-like majority
    assert max(n for a, n in train.items() if a != "en-us") < train["en-us"] / 4
    for split in ("dev", "test"):
        per_accent = Counter(i.accent for i in items if i.split == split)
        assert len(per_accent) == 8 and min(per_accent.values()) >= 100
        assert len(set(per_accent.values())) == 1  # balanced
    variants = {s: {_variant(i.voice) for i in items if i.split == s} for s in SPLITS}
    assert not variants["train"] & (variants["dev"] | variants["test"])
    assert not variants["dev"] & variants["test"]
    used = set().union(*variants.values())
    assert not used & voices.RESERVED_VARIANTS
    assert len(used) >= 40


def test_reserved_never_in_variant_lists() -> None:
    listed = set().union(*voices.VARIANT_SPLITS.values())
    assert not listed & voices.RESERVED_VARIANTS
    assert sum(len(v) for v in voices.VARIANT_SPLITS.values()) == len(listed)  # no variant in 2 splits


def test_variants_exist_and_differ_from_base_voice() -> None:
    """An unknown variant silently falls back to the base voice: every listed one must be a file and
    must change the audio."""
    names = sorted(set().union(*voices.VARIANT_SPLITS.values()))
    assert voices.available_variants(names) == names

    def md5(voice: str) -> str:
        out = subprocess.run(["espeak-ng", "-v", voice, "--stdout", "hello there"], capture_output=True,
                             check=True).stdout
        return hashlib.md5(out).hexdigest()

    base = md5("en-us")
    assert md5("en-us+NoSuchVariant") == base  # the fallback this test guards against
    digests = {v: md5(f"en-us+{v}") for v in names}
    assert base not in digests.values()


def test_unknown_accent_and_preset() -> None:
    with pytest.raises(UserError, match=r"unknown accent\(s\) en-xx .*valid: en-us, en-us-nyc"):
        plan_corpus(preset="demo", utts_per_accent=6, seed=0, accents=["en-us", "en-xx"])
    with pytest.raises(UserError, match="unknown preset 'big'"):
        plan_corpus(preset="big", utts_per_accent=6, seed=0, accents=None)


def test_l2_missing_mbrola_explains_how_to_enable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voices.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match=r"contrib.*non-free.*mbrola-de1"):
        plan_corpus(preset="l2", utts_per_accent=6, seed=0, accents=None)


# ---- the shared tiny corpus ---------------------------------------------------------------
def test_corpus_splits_nonempty_and_disjoint(synth_corpus: Path) -> None:
    data = _read_splits(synth_corpus)
    accents = {"en-us", "en-gb-scotland", "en-029"}
    for split in SPLITS:
        assert {u.accent for u in data[split]} == accents  # every split has every accent
    assert [len(data[s]) for s in SPLITS] == [18, 3, 3]
    texts = {s: {u.text for u in data[s]} for s in SPLITS}
    spk = {s: {u.speaker for u in data[s]} for s in SPLITS}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not texts[a] & texts[b]
        assert not spk[a] & spk[b]
    assert all(u.speaker.split("_", 1)[1] not in voices.RESERVED_VARIANTS for s in SPLITS for u in data[s])


def test_corpus_wavs_are_16k_mono_int16(synth_corpus: Path) -> None:
    for u in load_data_dir(synth_corpus / "dev"):
        info = sf.info(u.audio)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        x, _ = sf.read(u.audio, dtype="int16")
        peak = int(np.abs(x.astype(np.int32)).max())
        assert abs(peak - 29204) <= 3  # normalised to -1 dBFS after resampling, so never clipped
        assert abs(len(x) / 16000 - u.duration) < 1e-3


def test_lhotse_manifest_matches_kaldi(synth_corpus: Path) -> None:
    kaldi = {u.utt_id: u for u in load_data_dir(synth_corpus / "train")}
    cuts = {u.utt_id: u for u in load_data_dir(synth_corpus / "train" / "cuts.jsonl.gz")}
    assert cuts.keys() == kaldi.keys()
    for k, u in cuts.items():
        assert (u.text, u.accent, u.speaker, u.audio) == (kaldi[k].text, kaldi[k].accent, kaldi[k].speaker,
                                                          kaldi[k].audio)


def test_same_seed_same_audio_bytes(synth_corpus: Path, tmp_path: Path) -> None:
    again = synthesize_corpus(out_dir=tmp_path / "c", preset="demo", utts_per_accent=8, seed=0, jobs=2,
                              accents=["en-us", "en-gb-scotland", "en-029"], progress=False)
    assert again.ok
    for split in SPLITS:
        assert (tmp_path / "c" / split / "text").read_text() == (synth_corpus / split / "text").read_text()
        for u in load_data_dir(synth_corpus / split):
            rel = Path(u.audio).relative_to(synth_corpus)
            assert (tmp_path / "c" / rel).read_bytes() == Path(u.audio).read_bytes(), rel


# ---- resume and failures ------------------------------------------------------------------
def _small(out: Path, **kw) -> synth_mod.SynthSummary:
    return synthesize_corpus(out_dir=out, preset="demo", utts_per_accent=6, seed=1, jobs=2,
                             accents=["en-gb"], progress=False, **kw)


def test_six_per_accent_gives_every_split_and_resume_skips(tmp_path: Path) -> None:
    first = _small(tmp_path)
    assert first.ok and first.generated == 6 and first.resumed == 0
    assert first.counts == {"train": {"en-gb": 4}, "dev": {"en-gb": 1}, "test": {"en-gb": 1}}
    wavs = sorted((tmp_path / "wav").rglob("*.wav"))
    assert len(wavs) == 6
    mtimes = {p: p.stat().st_mtime_ns for p in wavs}
    wavs[0].unlink()
    second = _small(tmp_path)
    assert (second.generated, second.resumed) == (1, 5)
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items() if p != wavs[0])
    assert wavs[0].is_file()
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(UserError, match="other settings"):
        synthesize_corpus(out_dir=tmp_path, preset="demo", utts_per_accent=6, seed=2, jobs=1,
                          accents=["en-gb"], progress=False)


def test_failed_item_retried_once_then_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = plan_corpus(preset="demo", utts_per_accent=6, seed=1, accents=["en-gb"])
    bad = next(i.utt_id for i in items if i.split == "train")
    real = synth_mod.render_utterance
    calls: Counter[str] = Counter()

    def flaky(item, path):
        calls[item.utt_id] += 1
        if item.utt_id == bad:
            raise DataError(f"utterance '{item.utt_id}': boom")
        return real(item, path)

    monkeypatch.setattr(synth_mod, "render_utterance", flaky)
    summary = _small(tmp_path)
    assert not summary.ok
    assert summary.failed == [(bad, f"utterance '{bad}': boom")]
    assert calls[bad] == 2 and max(n for k, n in calls.items() if k != bad) == 1
    assert summary.counts["train"] == {"en-gb": 3}
    assert bad not in (tmp_path / "train" / "wav.scp").read_text()
    assert "boom" in (tmp_path / "synth_summary.json").read_text()


def test_l2_plan_when_voices_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voices.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(voices, "mbrola_voice_installed", lambda voice: True)
    items = plan_corpus(preset="l2", utts_per_accent=10, seed=0, accents=["l2-de", "l2-fr"])
    assert {i.voice.split("-")[0] for i in items} == {"mb"}  # one engine for the whole preset
    by_split = {s: {i.speaker for i in items if i.split == s and i.accent == "l2-de"} for s in SPLITS}
    assert by_split["dev"] == {"l2-de_mb-de5-en"} and by_split["test"] == {"l2-de_mb-de6-en"}
    assert not by_split["train"] & (by_split["dev"] | by_split["test"])
    fr_train = {i.speaker for i in items if i.split == "train" and i.accent == "l2-fr"}
    fr_test = {i.speaker for i in items if i.split == "test" and i.accent == "l2-fr"}
    assert fr_test <= fr_train  # 2 voices: cannot be speaker-disjoint (documented)
    assert not voices.l2_speaker_disjoint("l2-fr") and voices.l2_speaker_disjoint("l2-de")
