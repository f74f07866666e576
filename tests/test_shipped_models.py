"""The shipped model dirs (models/) load, stay small, and work with every command's code path."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from qifusion.data.audio import read_audio
from qifusion.data.manifest import load_data_dir
from qifusion.decode.longform import decode_long
from qifusion.decode.recognizer import Recognizer
from qifusion.decode.transcribe import transcribe_files
from qifusion.modeldir import load_model_dir

MODELS = Path(__file__).resolve().parent.parent / "models"
SHIPPED = ["accents-en-qifusion", "accents-en-baseline"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_dir_is_complete_and_small(name: str) -> None:
    d = MODELS / name
    for f in ("model.pt", "config.yaml", "units.txt", "accents.txt", "cmvn.json", "card.json", "README.md"):
        assert (d / f).is_file(), f"{d / f} is missing"
    assert sum(f.stat().st_size for f in d.iterdir()) <= 15e6
    loaded = load_model_dir(d)
    assert loaded.card["fp16"] is True
    assert len(loaded.accents) == 8 and "en-gb-scotland" in loaded.accents
    assert "synthetic speech" in (d / "README.md").read_text()
    accent_parts = loaded.model.laf is not None
    assert accent_parts == (name == "accents-en-qifusion")


def test_shipped_qifusion_transcribes_streaming_like_offline(synth_corpus: Path) -> None:
    files = [Path(u.audio) for u in load_data_dir(synth_corpus / "test")][:3]
    lines = {}
    for streaming in (False, True):
        out = io.StringIO()
        failed = transcribe_files(model_dir=MODELS / "accents-en-qifusion", files=files,
                                  mode="ctc_greedy", chunk_size=16, left_chunks=-1, streaming=streaming,
                                  backend="torch", out=out)
        assert failed == 0
        lines[streaming] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [x["text"] for x in lines[True]] == [x["text"] for x in lines[False]]
    assert all(x["text"] for x in lines[True])
    # its accent ID is at chance on dev (aid_calibration.json): no accent is named, the record says why
    assert all(x["accent"] is None and x["accent_id"]["status"] == "no_working_aid" for x in lines[True])
    assert all("no working accent ID" in x["accent_id"]["note"] for x in lines[False])


def test_long_audio_splits_at_pauses_into_the_parts(synth_corpus: Path) -> None:
    """Test utterances joined by 2 s pauses (~2.5 minutes) are cut at the pauses (endpoint rule 2:
    trailing silence after speech) into segments whose texts match the utterances decoded alone."""
    import editdistance

    utts = load_data_dir(synth_corpus / "test")
    parts = [read_audio(u.audio) for u in utts]
    gap = np.zeros(int(2.0 * 16000), dtype=np.float32)
    reps = max(1, int(np.ceil(150.0 / sum(p.shape[0] / 16000 + 2.0 for p in parts))))
    seq = [p for _ in range(reps) for p in parts]
    x = np.concatenate([np.concatenate([gap, p]) for p in seq] + [gap])
    rec = Recognizer.from_model_dir(MODELS / "accents-en-qifusion", chunk_size=16, left_chunks=4,
                                    mode="ctc_greedy")
    alone = []
    for p in parts:
        s = rec.create_stream()
        s.accept_waveform(16000, np.concatenate([gap[:8000], p, gap]))
        s.input_finished()
        while rec.is_ready(s):
            rec.decode(s)
        alone.append(s.result.text)
    res = decode_long(rec, ((16000, x[i : i + 16000]) for i in range(0, x.shape[0], 16000)))
    # The shipped demo model (~43% test CER) sometimes emits a token in a pause (an extra short segment); its
    # output depends on the left context, so the bounds are loose; tighten them once the shipped models are
    # better. Without pause endpoints (only the 20 s rule) there would be ~1/4 as many segments.
    assert len(seq) <= len(res.segments) <= len(seq) + len(seq) // 10
    hyp = " ".join(seg.text for seg in res.segments)
    ref = " ".join(alone[i % len(parts)] for i in range(len(seq)))
    assert editdistance.eval(hyp, ref) / len(ref) < 0.35
    starts = [seg.start for seg in res.segments]
    assert starts == sorted(starts) and res.segments[-1].end <= res.duration + 1e-6
