"""`qifusion prepare` on tiny fake KeSpeech / MagicData-RAMC layouts; text normalisation; shards."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qifusion.cli import main
from qifusion.data.manifest import Utterance, load_data_dir
from qifusion.data.prepare import prepare_corpus
from qifusion.data.prepare.kespeech import SUBDIALECTS, canonical_subdialect
from qifusion.data.prepare.text import normalize_mandarin
from qifusion.data.shards import iter_shards, list_shards, write_shards
from qifusion.errors import DataError


def _wav(path: Path, seconds: float, sr: int = 16000, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.2 * np.random.default_rng(seed).standard_normal(int(seconds * sr)).astype(np.float32)
    sf.write(path, x, sr, subtype="PCM_16")


def _lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_normalize_mandarin() -> None:
    assert normalize_mandarin("你好，世界！ 今天 天气 好。") == "你好世界今天天气好"
    assert normalize_mandarin("我用 iPhone 12 pro 拍的[LAUGHTER]") == "我用IPHONE 12 PRO拍的"
    assert normalize_mandarin("ＡＢＣ１２３“引号”") == "ABC123引号"
    assert normalize_mandarin("[LAUGHTER] [SONANT]") == ""


def test_canonical_subdialect() -> None:
    assert canonical_subdialect("ji_lu") == "Ji-Lu" and canonical_subdialect("Lan-Yin") == "Lan-Yin"
    assert canonical_subdialect("Cantonese") is None
    assert len(SUBDIALECTS) == 9


def _fake_kespeech(src: Path) -> None:
    parts = {"train_phase1": 0, "train_phase2": 1, "dev_phase1": 2, "dev_phase2": 3, "test": 4}
    for part, p in parts.items():
        wav, text, sub, spk = [], [], [], []
        for i, dialect in enumerate(SUBDIALECTS):
            utt = f"{p}{i:02d}_utt"
            rel = f"Audio/{part}/{utt}.wav"
            _wav(src / rel, 0.2 + 0.05 * i, seed=p * 10 + i)
            wav.append(f"{utt} {rel}")
            text.append(f"{utt} 今天，天气 很好！{i}")
            sub.append(f"{utt} {dialect}")
            spk.append(f"{utt} spk{p}{i}")
        d = src / "Tasks" / "ASR" / part
        if part == "train_phase1":  # bad items, each skipped and counted
            wav += ["nofile Audio/missing.wav", "notext Audio/train_phase1/000_utt.wav",
                    "baddial Audio/train_phase1/001_utt.wav", "corrupt Audio/corrupt.wav"]
            text += ["nofile 你好", "baddial 你好", "corrupt 你好"]
            sub += ["nofile Mandarin", "notext Mandarin", "baddial Klingon", "corrupt Beijing"]
            (src / "Audio" / "corrupt.wav").write_bytes(b"RIFF not really a wav")
        _lines(d / "wav.scp", wav)
        _lines(d / "text", text)
        _lines(d / "utt2subdialect", sub)
        _lines(d / "utt2spk", spk)


def test_prepare_kespeech_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "KeSpeech", tmp_path / "out"
    _fake_kespeech(src)
    assert main(["prepare", "kespeech", str(src), "--out", str(out)]) == 0
    train, dev, test = (load_data_dir(out / s) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (18, 18, 9)
    assert sorted({u.accent for u in train}) == sorted(SUBDIALECTS)
    u = next(u for u in test if u.utt_id == "403_utt")
    assert u.text == "今天天气很好3" and u.accent == "Jiang-Huai" and u.speaker == "spk43"
    assert u.duration == pytest.approx(0.35) and Path(u.audio).is_file()
    assert (out / "accents.txt").read_text().split() == sorted(SUBDIALECTS)
    rep = json.loads((out / "prepare_report.json").read_text())
    assert rep["skipped"] == {"missing audio file": 1, "no transcript": 1, "missing or unknown subdialect": 1,
                              "unreadable audio": 1}
    err = capsys.readouterr().err
    assert "skipped 1 x missing or unknown subdialect (e.g. baddial (train_phase1): 'Klingon')" in err
    assert "corrupt.wav" in rep["examples"]["unreadable audio"]


def test_prepare_kespeech_bad_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a KeSpeech root"):
        prepare_corpus(corpus="kespeech", src=tmp_path, out_dir=tmp_path / "o", shards=0)


def _fake_ramc(src: Path, *, split_dirs: bool) -> None:
    root = src / "MDT2021S003"
    _lines(root / "SPKINFO.txt", [
        "CHANNEL\tSPEAKER_ID\tGENDER\tAGE\tREGION,CITY\tDEVICE",
        "C0\tG0001\tM\tMiddle-aged and young people\tSichuan\tMobile phone",
        "C0\tG0002\tF\tMiddle-aged and young people\tBeijing,Beijing\tMobile phone",
    ])
    for k, split in enumerate(("train", "dev", "test")):
        conv = f"CTS-CN-F2F-2019-11-15-{k + 1}"
        sub = f"{split}/" if split_dirs else ""
        _wav(root / "WAV" / f"{sub}{conv}.wav", 4.0, seed=k)
        _lines(root / "TXT" / f"{sub}{conv}.txt", [
            "[0.100,1.200]\tG0001\t男,普通话\t你好，最近怎么样？",
            "[1.300,2.000]\tG0002\t女,普通话\t还行[LAUGHTER]吧",
            "[2.000,2.500]\tG0001\t男,普通话\t[*]",
            "[2.500,3.000]\tG0002\t女,普通话\t[LAUGHTER]",
            "[3.000,3.900]\tG0009\t女,普通话\t谁",
            "[3.500,3.100]\tG0001\t男,普通话\t倒序",
        ])


@pytest.mark.parametrize("split_dirs", [True, False])
def test_prepare_magicdata_ramc(tmp_path: Path, split_dirs: bool) -> None:
    src, out = tmp_path / "ramc", tmp_path / "out"
    _fake_ramc(src, split_dirs=split_dirs)
    if not split_dirs:  # official split lists beside the corpus
        for k, split in enumerate(("train", "dev", "test")):
            _lines(src / f"{split}.tsv", [f"CTS-CN-F2F-2019-11-15-{k + 1}.wav"])
    prepare_corpus(corpus="magicdata-ramc", src=src, out_dir=out, shards=0)
    dev = load_data_dir(out / "dev")
    assert [(u.utt_id, u.text, u.accent, u.speaker, u.start, u.end) for u in dev] == [
        ("G0001_CTS-CN-F2F-2019-11-15-2_0000100_0001200", "你好最近怎么样", "Sichuan", "G0001", 0.1, 1.2),
        ("G0002_CTS-CN-F2F-2019-11-15-2_0001300_0002000", "还行吧", "Beijing", "G0002", 1.3, 2.0),
    ]
    assert (out / "dev" / "segments").is_file()
    assert (out / "dev" / "wav.scp").read_text().count("\n") == 1  # one recording, two segments
    rep = json.loads((out / "prepare_report.json").read_text())
    assert rep["skipped"] == {"unintelligible turn ([*])": 3, "noise-only or empty turn": 3,
                              "speaker not in SPKINFO.txt": 3, "bad time stamp": 3}
    assert rep["hours"]["train"] == pytest.approx(1.8 / 3600, abs=1e-4)


def test_shards_roundtrip_and_ddp_split(tmp_path: Path) -> None:
    utts = []
    for i in range(7):
        sr = 8000 if i == 3 else 16000  # resampled on the way in
        _wav(tmp_path / f"w{i}.wav", 0.1 * (i + 1), sr=sr, seed=i)
        utts.append(Utterance(f"utt.{i}", str(tmp_path / f"w{i}.wav"), f"文本{i}", f"acc{i % 2}", "s"))
    _wav(tmp_path / "conv.wav", 2.0, seed=9)
    utts.append(Utterance("seg", str(tmp_path / "conv.wav"), "段", "acc0", start=0.5, end=1.0))
    utts.append(Utterance("broken", str(tmp_path / "missing.wav"), "x", "acc0"))
    rep = write_shards(utts, tmp_path / "shards", num_shards=3, seed=1)
    assert (rep.num_shards, rep.num_utts, rep.skipped) == (3, 8, {"unreadable audio": 1})
    shards = list_shards(tmp_path / "shards")
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    items = {it.utt_id: it for it in iter_shards(shards)}
    assert sorted(items) == sorted(u.utt_id for u in utts if u.utt_id != "broken")
    assert items["utt.3"].samples.shape == (6400,) and items["seg"].samples.shape == (8000,)
    assert (items["utt.5"].text, items["utt.5"].accent) == ("文本5", "acc1")
    ref = sf.read(tmp_path / "w5.wav", dtype="float32")[0]
    assert np.max(np.abs(items["utt.5"].samples - ref)) < 1e-4
    # two DDP ranks read disjoint shards that together cover everything
    r0 = [it.utt_id for it in iter_shards(shards, rank=0, world_size=2, shuffle=True, seed=3)]
    r1 = [it.utt_id for it in iter_shards(shards, rank=1, world_size=2, shuffle=True, seed=3)]
    assert not set(r0) & set(r1) and sorted(r0 + r1) == sorted(items)


def test_prepare_with_shards(tmp_path: Path) -> None:
    src, out = tmp_path / "ramc", tmp_path / "out"
    _fake_ramc(src, split_dirs=True)
    prepare_corpus(corpus="magicdata-ramc", src=src, out_dir=out, shards=2)
    shards = list_shards(out / "train" / "shards")
    assert len(shards) == 2
    got = sorted((it.utt_id, it.text, len(it.samples)) for it in iter_shards(shards))
    assert got == [("G0001_CTS-CN-F2F-2019-11-15-1_0000100_0001200", "你好最近怎么样", 17600),
                   ("G0002_CTS-CN-F2F-2019-11-15-1_0001300_0002000", "还行吧", 11200)]


def test_ramc_flat_layout_without_lists_splits_by_name(tmp_path: Path) -> None:
    src, out = tmp_path / "ramc", tmp_path / "out"
    _fake_ramc(src, split_dirs=False)
    prepare_corpus(corpus="magicdata-ramc", src=src, out_dir=out, shards=0)
    convs = {s: {u.utt_id.split("_")[1] for u in load_data_dir(out / s)} for s in ("train", "dev", "test")}
    assert convs == {"test": {"CTS-CN-F2F-2019-11-15-1"}, "dev": {"CTS-CN-F2F-2019-11-15-2"},
                     "train": {"CTS-CN-F2F-2019-11-15-3"}}
