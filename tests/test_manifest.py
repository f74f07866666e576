"""Kaldi / jsonl / lhotse manifest loading, writing, accents and bad-input messages."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qifusion.data.audio import read_audio
from qifusion.data.manifest import (
    LoadReport,
    Utterance,
    accent_id,
    accent_index,
    check_accents,
    load_accents,
    load_data_dir,
    write_kaldi_dir,
)
from qifusion.errors import DataError


def _wav(path: Path, seconds: float, sr: int = 16000) -> str:
    n = int(seconds * sr)
    sf.write(path, (0.3 * np.sin(np.arange(n) / 7)).astype(np.float32), sr, subtype="PCM_16")
    return str(path)


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_flat_kaldi_dir_wav_scp_and_text_only(tmp_path: Path) -> None:
    a = _wav(tmp_path / "a.wav", 0.5)
    b = _wav(tmp_path / "b.wav", 0.25)
    _write(tmp_path / "wav.scp", [f"u1 {a}", f"u2 cat {b} |"])
    _write(tmp_path / "text", ["u1 hello world", "u2 你好"])
    utts = load_data_dir(tmp_path)
    assert [(u.utt_id, u.text, u.accent, u.speaker) for u in utts] == [
        ("u1", "hello world", None, None), ("u2", "你好", None, None)]
    assert utts[1].audio == f"cat {b} |" and utts[1].is_pipe
    assert read_audio(utts[1].audio, utt_id="u2").shape == (4000,)


def test_kaldi_dir_accents_speakers_segments(tmp_path: Path) -> None:
    rec = _wav(tmp_path / "conv.wav", 3.0)
    _write(tmp_path / "wav.scp", [f"conv1 {rec}"])
    _write(tmp_path / "segments", ["s1 conv1 0.50 1.25", "s2 conv1 2.0 3.0"])
    _write(tmp_path / "text", ["s1 一 二", "s2 三"])
    _write(tmp_path / "utt2subdialect", ["s1 Beijing", "s2 Ji-Lu"])
    _write(tmp_path / "utt2spk", ["s1 spkA", "s2 spkB"])
    utts = load_data_dir(tmp_path)
    assert [(u.utt_id, u.start, u.end, u.duration, u.accent, u.speaker) for u in utts] == [
        ("s1", 0.5, 1.25, 0.75, "Beijing", "spkA"), ("s2", 2.0, 3.0, 1.0, "Ji-Lu", "spkB")]
    x = read_audio(utts[0].audio, start=utts[0].start, end=utts[0].end, utt_id="s1")
    assert x.shape == (12000,)


def test_write_kaldi_dir_roundtrip_all_formats(tmp_path: Path) -> None:
    rec = _wav(tmp_path / "conv.wav", 2.0)
    utts = [Utterance("b", rec, "hi there", "en-gb", "s2", 1.0, 1.5, 0.5),
            Utterance("a", rec, "yo", "en-us", "s1", 0.0, 0.75, 0.75),
            Utterance("c", "sox x.wav -t wav - |", "pipe", None, None)]
    write_kaldi_dir(utts, tmp_path / "out")
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["data.jsonl", "segments", "text", "utt2accent", "utt2dur", "utt2spk", "wav.scp"]
    assert (tmp_path / "out" / "segments").read_text().splitlines()[0] == "a conv 0.000 0.750"
    expect = sorted(utts, key=lambda u: u.utt_id)
    assert load_data_dir(tmp_path / "out") == expect  # Kaldi files win over data.jsonl
    assert load_data_dir(tmp_path / "out" / "data.jsonl") == expect
    assert not list((tmp_path / "out").glob(".*tmp"))  # no temp files left behind


def test_jsonl_manifest_relative_audio(tmp_path: Path) -> None:
    _wav(tmp_path / "x.wav", 0.1)
    rows = [{"utt_id": "x1", "audio": "x.wav", "text": "abc", "accent": "en-029", "duration": 0.1}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (u,) = load_data_dir(tmp_path / "m.jsonl")
    assert u.audio == str(tmp_path / "x.wav") and u.accent == "en-029" and u.duration == 0.1


def test_lhotse_cuts_manifest(tmp_path: Path) -> None:
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    rec = Recording.from_file(_wav(tmp_path / "r1.wav", 2.0), recording_id="r1")
    sups = [SupervisionSegment(id="r1-a", recording_id="r1", start=0.0, duration=2.0, text="full cut",
                               speaker="spk1", custom={"accent": "en-gb-scotland"})]
    full = CutSet.from_manifests(recordings=RecordingSet.from_recordings([rec]),
                                supervisions=SupervisionSet.from_segments(sups))
    sub = [SupervisionSegment(id="r1-b", recording_id="r1", start=0.5, duration=1.0, text="part",
                              speaker="spk2", language="Sichuan")]
    seg = CutSet.from_manifests(recordings=RecordingSet.from_recordings([rec]),
                               supervisions=SupervisionSet.from_segments(sub)).trim_to_supervisions()
    (full + seg).to_file(tmp_path / "cuts.jsonl.gz")
    utts = load_data_dir(tmp_path)
    by_text = {u.text: u for u in utts}
    assert by_text["full cut"].accent == "en-gb-scotland" and by_text["full cut"].end is None
    assert by_text["full cut"].speaker == "spk1" and by_text["full cut"].duration == 2.0
    p = by_text["part"]
    assert (p.start, p.end, p.accent) == (0.5, 1.5, "Sichuan")
    assert read_audio(p.audio, start=p.start, end=p.end).shape == (16000,)


def test_missing_transcript_strict_and_skip(tmp_path: Path) -> None:
    a = _wav(tmp_path / "a.wav", 0.1)
    _write(tmp_path / "wav.scp", [f"u1 {a}", f"u2 {a}", f"u3 {a}"])
    _write(tmp_path / "text", ["u1 ok", "u3"])
    with pytest.raises(DataError, match=rf"utterance 'u2': no transcript in {tmp_path / 'text'}"):
        load_data_dir(tmp_path)
    rep = LoadReport()
    utts = load_data_dir(tmp_path, strict=False, report=rep)
    assert [u.utt_id for u in utts] == ["u1"]
    assert rep.skipped == {"missing transcript": 2} and "e.g. u2" in rep.summary()
    assert [u.text for u in load_data_dir(tmp_path, require_text=False)] == ["ok", None, ""]


def test_bad_layouts_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_data_dir(tmp_path / "missing")
    with pytest.raises(DataError, match=r"no wav.scp, data.jsonl or cuts.jsonl.gz"):
        load_data_dir(tmp_path)
    _write(tmp_path / "wav.scp", ["u1 a.wav", "u1 b.wav"])
    with pytest.raises(DataError, match=rf"{tmp_path / 'wav.scp'}:2: duplicate key 'u1'"):
        load_data_dir(tmp_path)
    _write(tmp_path / "wav.scp", ["u1 a.wav"])
    _write(tmp_path / "segments", ["s1 nope 0 1"])
    with pytest.raises(DataError, match=r"utterance 's1' refers to recording 'nope' not in wav.scp"):
        load_data_dir(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"utt_id": "x"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: missing or non-string field 'audio'"):
        load_data_dir(tmp_path / "bad.jsonl")


def test_accents_and_unknown_accent_message(tmp_path: Path) -> None:
    utts = [Utterance("a", "x", "t", "Mandarin"), Utterance("b", "x", "t", "Beijing"),
            Utterance("c", "x", "t", None), Utterance("d", "x", "t", "Beijing")]
    accents = load_accents(utts)
    assert accents == ["Beijing", "Mandarin"]
    idx = accent_index(accents)
    assert [accent_id(u, idx) for u in utts] == [1, 0, -1, 0]
    with pytest.raises(DataError, match=r"utterance 'z' in dev/text: unknown accent 'Klingon' "
                                        r"\(known accents: Beijing, Mandarin\)"):
        check_accents([*utts, Utterance("z", "x", "t", "Klingon")], accents, source="dev/text")


def test_write_rejects_bad_ids(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="duplicate utterance id 'a'"):
        write_kaldi_dir([Utterance("a", "x"), Utterance("a", "y")], tmp_path)
    with pytest.raises(DataError, match="contains whitespace"):
        write_kaldi_dir([Utterance("a b", "x")], tmp_path)
