"""qifusion synth --preset accents / accents-free (issue 16): planning, speaker and source-voice
bookkeeping, the licence gate, the demo's reserved sentences, determinism (rendering needs flite)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from qifusion.data import voices_accents as va
from qifusion.data.manifest import load_data_dir
from qifusion.data.synth import plan_corpus, synthesize_corpus
from qifusion.data.synth_accents import speaker_table, transform_effects
from qifusion.data.synth_plan import PRESETS
from qifusion.data.synth_text import DEMO_SHARE, demo_pool, demo_reserved, sentence_pool
from qifusion.data.voices_nonfree import INSTALL_COMMAND, InstallPlan, debian_mirror_and_suite
from qifusion.errors import UserError

SPLITS = ("train", "dev", "test")
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed (make setup)")


def _plan(preset: str = "accents", **kw):
    return plan_corpus(**({"preset": preset, "utts_per_accent": None, "seed": 0, "accents": None} | kw))


# ---- planning -------------------------------------------------------------------------------
def test_accents_plan_sizes_majority_and_disjoint_sentences() -> None:
    items = _plan()
    by_split = {s: {i.text for i in items if i.split == s} for s in SPLITS}
    assert not by_split["train"] & by_split["dev"]
    assert not by_split["test"] & (by_split["train"] | by_split["dev"])
    train_dev = [i.text for i in items if i.split != "test"]
    assert len(set(train_dev)) == len(train_dev)  # train and dev: each sentence once
    train = Counter(i.accent for i in items if i.split == "train")
    assert set(train) == set(va.ACCENT_VOICES)
    assert 0.38 < train["us"] / sum(train.values()) < 0.42  # KeSpeech-like majority
    assert set(Counter(i.accent for i in items if i.split == "dev").values()) == {108}  # balanced, 15% of 720
    test = Counter(i.accent for i in items if i.split == "test")
    assert len({i.text for i in items if i.split == "test"}) == 9 * 108
    assert test == {a: 216 if a in ("us", "german", "french") else 108 for a in va.ACCENT_VOICES}  # + twins
    assert 8000 < len(items) < 9500  # about the benchmark's size (8453)


def test_held_out_test_voices_have_train_voice_twins() -> None:
    """Every test sentence of an accent with held-out voices is also spoken by a train voice under a test
    transform: a paired comparison of the two kinds of test speaker, planned after the rest of the plan."""
    items = _plan()
    rows = {r["speaker"]: r for r in speaker_table(PRESETS["accents"], list(va.ACCENT_VOICES))}
    test = [i for i in items if i.split == "test"]
    held = [i for i in test if rows[i.speaker]["unseen_source"]]
    twins = [i for i in test
             if not rows[i.speaker]["unseen_source"] and i.accent in ("us", "german", "french")]
    assert Counter((i.accent, i.text) for i in twins) == Counter((i.accent, i.text) for i in held)
    train_src = {(r["accent"], r["source"]) for r in rows.values() if r["split"] == "train"}
    for i in twins:
        assert (i.accent, rows[i.speaker]["source"]) in train_src and (i.warp, i.tempo) in va.TEST_TRANSFORMS
    assert items[-len(twins):] == twins  # planned last: the rest of the corpus is as without them
    per = Counter(i.speaker for i in twins if i.accent == "us")
    assert len(per) == 10 and max(per.values()) - min(per.values()) <= 1  # 5 train voices x 2 transforms


def test_accents_plan_deterministic_for_seed() -> None:
    assert _plan(seed=3) == _plan(seed=3)
    assert [i.text for i in _plan(seed=3)] != [i.text for i in _plan(seed=4)]


def test_free_subset_uses_only_free_voices() -> None:
    items = _plan("accents-free")
    assert {i.accent for i in items} == set(va.FREE_ACCENTS) == {"us", "british", "scottish"}
    assert {i.engine for i in items} <= {"flite", "festival"}
    with pytest.raises(UserError, match="unknown accent"):
        _plan("accents-free", accents=["german"])


# ---- speakers and source voices -------------------------------------------------------------
@pytest.mark.parametrize(("n", "train", "dev", "test"), [(1, 1, 1, 1), (2, 2, 2, 2), (3, 2, 1, 1),
                                                         (4, 2, 1, 1), (5, 3, 1, 1), (6, 3, 1, 2),
                                                         (7, 4, 1, 2)])
def test_voice_roles(n: int, train: int, dev: int, test: int) -> None:
    voices = tuple(va.SourceVoice("flite", f"v{i}", "m") for i in range(n))
    roles = va.voice_roles(voices)
    assert [len(roles[s]) for s in SPLITS] == [train, dev, test]
    if n >= 3:  # held-out voices never train
        assert not set(roles["train"]) & (set(roles["dev"]) | set(roles["test"]))
    if n >= 4:
        assert not set(roles["dev"]) & set(roles["test"])


@pytest.mark.parametrize("free_only", [False, True])
def test_every_held_out_voice_has_a_train_voice_of_its_synthesiser(free_only: bool) -> None:
    """A dev or test voice held out of train must share its synthesiser with a train voice of its accent;
    else it measures whether a model carries an accent across synthesisers (the us dev voice festival ked
    was called british, like festival rab, until festival kal joined us's train voices)."""
    for accent in va.ACCENT_VOICES:
        voices = va.accent_voices(accent, free_only=free_only)
        if not voices:
            continue
        roles = va.voice_roles(voices)
        engines = {v.engine for v in roles["train"]}
        for v in {*roles["dev"], *roles["test"]} - set(roles["train"]):
            assert v.engine in engines, (accent, v)


@pytest.mark.parametrize("preset", ["accents", "accents-free"])
def test_test_speakers_unseen_and_transforms_outside_train_range(preset: str) -> None:
    items = _plan(preset)
    spk = {s: {i.speaker for i in items if i.split == s} for s in SPLITS}
    assert not spk["train"] & (spk["dev"] | spk["test"]) and not spk["dev"] & spk["test"]
    train_w = [i.warp for i in items if i.split == "train"]
    train_t = [i.tempo for i in items if i.split == "train"]
    for i in items:
        if i.split != "train":
            assert not min(train_w) <= i.warp <= max(train_w), i
            assert not min(train_t) <= i.tempo <= max(train_t), i
    for accent in {i.accent for i in items}:
        assert len({i.speaker for i in items if i.split == "test" and i.accent == accent}) >= 2, accent


def test_unseen_source_bookkeeping() -> None:
    rows = speaker_table(PRESETS["accents"], list(va.ACCENT_VOICES))
    train_src = {(r["accent"], r["source"]) for r in rows if r["split"] == "train"}
    for r in rows:
        assert r["unseen_source"] == (r["split"] != "train" and (r["accent"], r["source"]) not in train_src)
    unseen = {r["accent"] for r in rows if r["split"] == "test" and r["unseen_source"]}
    assert unseen == {"us", "german", "french"}  # the accents with 3+ source voices
    test_src = {(r["accent"], r["source"]) for r in rows if r["split"] == "test" and r["unseen_source"]}
    assert test_src == {("us", "flite-kal16"), ("us", "mbrola-us3"), ("german", "mbrola-de3"),
                        ("german", "mbrola-de7"), ("french", "mbrola-fr4"), ("french", "mbrola-fr5")}
    items = _plan()
    assert {i.speaker for i in items} == {r["speaker"] for r in rows}  # every planned speaker is listed


@pytest.mark.parametrize("free_only", [False, True])
def test_test_only_voices_have_two_train_voices_of_their_synthesiser(free_only: bool) -> None:
    # an unseen-source speaker must test accent, not a synthesiser no train voice of its accent used
    for accent in va.ACCENT_VOICES:
        voices = va.accent_voices(accent, free_only=free_only)
        if not voices:
            continue
        roles = va.voice_roles(voices)
        for v in roles["test"]:
            if v not in roles["train"]:
                assert sum(t.engine == v.engine for t in roles["train"]) >= 2, (accent, v)


def test_transform_effects() -> None:
    assert transform_effects(1.0, 1.0) == []
    assert transform_effects(1.1, 0.9) == ["speed", "1.1000", "tempo", "-s", "0.8182"]
    assert transform_effects(1.0, 1.05) == ["tempo", "-s", "1.0500"]


def test_derived_en_voice_keeps_phoneme_table() -> None:
    template = ("name en-french-1\nlanguage en 10\ngender male\n\ndictrules 1\npitch 82 117\n"
                "mbrola fr1 fr_phtrans\n")
    native = "language fr 8\nname french-mbrola-2\ngender female\npitch 140 220\nmbrola fr2 fr_phtrans\n"
    text = va.derived_voice_text(template, native)
    assert text.splitlines() == ["name en-fr2-qifusion", "language en 10", "dictrules 1", "gender female",
                                 "pitch 140 220", "mbrola fr2 fr_phtrans"]
    with pytest.raises(UserError, match="phoneme tables differ"):
        va.derived_voice_text(template, native.replace("fr_phtrans", "de2_phtrans"))


# ---- licence gate ---------------------------------------------------------------------------
def test_missing_nonfree_voices_fail_with_the_install_command(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(va, "mbrola_installed", lambda db: False)
    with pytest.raises(UserError) as err:
        synthesize_corpus(out_dir=tmp_path / "c", preset="accents", utts_per_accent=None, seed=0, jobs=1,
                          accents=None, progress=False)
    msg = str(err.value)
    assert INSTALL_COMMAND in msg and "accents-free" in msg and "non-commercial" in msg
    assert "mb-de1-en" in msg
    assert not (tmp_path / "c").exists()  # nothing written before the gate


def test_missing_free_voices_name_make_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which
    monkeypatch.setattr(va.shutil, "which", lambda n: None if n in ("flite", "text2wave") else real(n))
    with pytest.raises(UserError, match=r"needs flite, festival.*make setup.*festvox-rablpc16k"):
        synthesize_corpus(out_dir=tmp_path / "c", preset="accents-free", utts_per_accent=None, seed=0,
                          jobs=1, accents=None, progress=False)


def test_install_plan_reads_the_system_mirror(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n")
    assert debian_mirror_and_suite(tmp_path) == ("http://mirror.example/debian", "bookworm")
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://ftp.example/debian trixie main\n")
    assert debian_mirror_and_suite(tmp_path) == ("http://ftp.example/debian", "trixie")
    plan = InstallPlan(Path("/etc/apt/x.sources"), "Types: deb\nComponents: contrib non-free\n",
                       ("mbrola", "mbrola-de1"))
    text = plan.describe()
    assert "write /etc/apt/x.sources" in text and "contrib non-free" in text
    assert "apt-get install -y mbrola mbrola-de1" in text and "non-commercial" in text


# ---- the demo's reserved sentences ----------------------------------------------------------
def test_demo_shares_no_sentence_with_any_other_preset() -> None:
    demo = {i.text for i in _plan("demo")}
    assert all(demo_reserved(t) for t in demo)
    assert demo <= set(demo_pool(max_words=PRESETS["demo"].max_words))
    for name in ("benchmark", "accents", "accents-free", "heldout"):
        for seed in (0, 1):
            texts = {i.text for i in _plan(name, seed=seed)}
            assert not any(demo_reserved(t) for t in texts), (name, seed)
            assert not demo & texts, (name, seed)
    # about one sentence in DEMO_SHARE is reserved, whatever the length limit
    for max_words in (12, 20):
        share = len(demo_pool(max_words=max_words)) / len(sentence_pool(max_words=max_words))
        assert abs(share - 1 / DEMO_SHARE) < 0.01


# ---- rendering (flite only: fast, free, in CI) ----------------------------------------------
@needs_flite
def test_render_scottish_deterministic_with_speakers_and_licences(tmp_path: Path) -> None:
    kw = {"preset": "accents-free", "utts_per_accent": 3, "seed": 0, "jobs": 1, "accents": ["scottish"],
          "progress": False}
    a = synthesize_corpus(out_dir=tmp_path / "a", **kw)
    b = synthesize_corpus(out_dir=tmp_path / "b", **kw)
    assert a.ok and b.ok and a.generated == 3
    assert set(a.licences) == {"flite", "text"} and "free" in a.licences["flite"]
    summary = json.loads((tmp_path / "a" / "synth_summary.json").read_text())
    assert summary["licences"] == a.licences
    for split in SPLITS:
        utts = load_data_dir(tmp_path / "a" / split)
        assert len(utts) == 1
        for u in utts:
            rel = Path(u.audio).relative_to(tmp_path / "a")
            assert (tmp_path / "b" / rel).read_bytes() == Path(u.audio).read_bytes()
            assert sf.info(u.audio).samplerate == 16000
    rows = json.loads((tmp_path / "a" / "speakers.json").read_text())
    made = {u.speaker for s in SPLITS for u in load_data_dir(tmp_path / "a" / s)}
    assert made <= {r["speaker"] for r in rows}
    again = synthesize_corpus(out_dir=tmp_path / "a", **kw)  # resume: nothing to make
    assert (again.generated, again.resumed) == (0, 3)


@needs_flite
def test_warp_and_tempo_change_the_audio(tmp_path: Path) -> None:
    from qifusion.data.synth import render_utterance
    from qifusion.data.synth_plan import SynthItem

    text = "the old man walked slowly along the quiet river bank"
    base = SynthItem("u0", "train", "scottish", "s", "awb", text, 50, 145, "a.wav", engine="flite")
    fast = SynthItem("u1", "test", "scottish", "s", "awb", text, 50, 145, "b.wav", engine="flite",
                     warp=1.1, tempo=1.1)
    d0 = render_utterance(base, tmp_path / "a.wav")
    d1 = render_utterance(fast, tmp_path / "b.wav")
    assert d1 == pytest.approx(d0 / 1.1, rel=0.03)  # tempo is the final rate factor


def test_model_card_names_the_corpus_licences(tmp_path: Path) -> None:
    from qifusion.data.synth_accents import corpus_licences
    from qifusion.eval.model_card import build_card

    corpus = tmp_path / "corpus"
    (corpus / "train").mkdir(parents=True)
    licences = {"mbrola": "non-commercial", "text": "WordNet"}
    (corpus / "synth_summary.json").write_text(json.dumps({"preset": "accents", "licences": licences}))
    assert corpus_licences(corpus) == licences == corpus_licences(corpus / "train")
    assert corpus_licences(tmp_path) == {}
    model = tmp_path / "model"
    model.mkdir()
    (model / "card.json").write_text(json.dumps({"data": str(corpus), "data_licences": licences}))
    text = build_card(model, [], title="m")
    assert "## Licences of the training data" in text and "- mbrola: non-commercial" in text


def test_corpus_made_before_the_reservation_is_refused(tmp_path: Path) -> None:
    old = {"preset": "demo", "utts_per_accent": 6, "seed": 0, "accents": ["en-us"], "utterances": 6}
    tmp_path.joinpath("synth_plan.json").write_text(json.dumps(old))
    with pytest.raises(UserError, match=r"before the demo's sentences were reserved.*delete it"):
        synthesize_corpus(out_dir=tmp_path, preset="demo", utts_per_accent=6, seed=0, jobs=1,
                          accents=["en-us"], progress=False)
    assert not (tmp_path / "wav").exists()


def test_corpus_made_before_the_twins_gains_them_and_nothing_else_changes(tmp_path: Path) -> None:
    from qifusion.data.synth import _check_plan

    new = {"preset": "accents-free", "utts_per_accent": 720, "seed": 0, "accents": ["us"], "utterances": 300,
           "texts": 2, "test_twins": True}
    old = {k: v for k, v in new.items() if k != "test_twins"} | {"utterances": 264}
    plan = tmp_path / "synth_plan.json"
    plan.write_text(json.dumps(old))
    _check_plan(tmp_path, new)  # accepted: the same corpus plus its twins
    assert json.loads(plan.read_text()) == new
    plan.write_text(json.dumps(old | {"seed": 1}))
    with pytest.raises(UserError, match="other settings"):  # any other difference is still refused
        _check_plan(tmp_path, new)


@pytest.mark.skipif(shutil.which("text2wave") is None, reason="festival not installed (make setup)")
def test_render_festival_voice(tmp_path: Path) -> None:
    from qifusion.data.synth import render_utterance
    from qifusion.data.synth_plan import SynthItem

    item = SynthItem("u0", "train", "british", "s", "rab_diphone", "a cup of tea in the garden", 50, 145,
                     "a.wav", engine="festival", warp=0.95, tempo=1.05)
    dur = render_utterance(item, tmp_path / "a.wav")
    assert 1.0 < dur < 4.0 and sf.info(str(tmp_path / "a.wav")).samplerate == 16000
    assert not list(tmp_path.glob(".*"))  # the engine's temp file is gone
