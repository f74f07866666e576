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
from tests.fake_corpora import fake_kespeech, fake_ramc, write_lines, write_wav


def test_normalize_mandarin() -> None:
    assert normalize_mandarin("你好，世界！ 今天 天气 好。") == "你好世界今天天气好"
    assert normalize_mandarin("我用 iPhone 12 pro 拍的[LAUGHTER]") == "我用IPHONE 12 PRO拍的"
    assert normalize_mandarin("ＡＢＣ１２３“引号”") == "ABC123引号"
    assert normalize_mandarin("[LAUGHTER] [SONANT]") == ""


def test_canonical_subdialect() -> None:
    assert canonical_subdialect("ji_lu") == "Ji-Lu" and canonical_subdialect("Lan-Yin") == "Lan-Yin"
    assert canonical_subdialect("Cantonese") is None
    assert len(SUBDIALECTS) == 9


def test_prepare_kespeech_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "KeSpeech", tmp_path / "out"
    fake_kespeech(src)
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


@pytest.mark.parametrize("split_dirs", [True, False])
def test_prepare_magicdata_ramc(tmp_path: Path, split_dirs: bool) -> None:
    src, out = tmp_path / "ramc", tmp_path / "out"
    fake_ramc(src, split_dirs=split_dirs)
    if not split_dirs:  # official split lists beside the corpus
        for k, split in enumerate(("train", "dev", "test")):
            write_lines(src / f"{split}.tsv", [f"CTS-CN-F2F-2019-11-15-{k + 1}.wav"])
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
        write_wav(tmp_path / f"w{i}.wav", 0.1 * (i + 1), sr=sr, seed=i)
        utts.append(Utterance(f"utt.{i}", str(tmp_path / f"w{i}.wav"), f"文本{i}", f"acc{i % 2}", "s"))
    write_wav(tmp_path / "conv.wav", 2.0, seed=9)
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
    fake_ramc(src, split_dirs=True)
    prepare_corpus(corpus="magicdata-ramc", src=src, out_dir=out, shards=2)
    shards = list_shards(out / "train" / "shards")
    assert len(shards) == 2
    got = sorted((it.utt_id, it.text, len(it.samples)) for it in iter_shards(shards))
    assert got == [("G0001_CTS-CN-F2F-2019-11-15-1_0000100_0001200", "你好最近怎么样", 17600),
                   ("G0002_CTS-CN-F2F-2019-11-15-1_0001300_0002000", "还行吧", 11200)]


def test_ramc_flat_layout_without_lists_splits_by_name(tmp_path: Path) -> None:
    src, out = tmp_path / "ramc", tmp_path / "out"
    fake_ramc(src, split_dirs=False)
    prepare_corpus(corpus="magicdata-ramc", src=src, out_dir=out, shards=0)
    convs = {s: {u.utt_id.split("_")[1] for u in load_data_dir(out / s)} for s in ("train", "dev", "test")}
    assert convs == {"test": {"CTS-CN-F2F-2019-11-15-1"}, "dev": {"CTS-CN-F2F-2019-11-15-2"},
                     "train": {"CTS-CN-F2F-2019-11-15-3"}}
