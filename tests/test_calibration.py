"""Accent-ID honesty: calibration (accuracy, chance, significance, temperature) and what the outputs show."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from qifusion.cli import main
from qifusion.eval import calibration as cal_mod
from qifusion.eval.calibration import (
    NO_AID,
    NOT_CALIBRATED,
    NOT_WORKING,
    OK,
    AccentView,
    AidCalibration,
    binomial_sf,
    fit_calibration,
    load_calibration,
    save_calibration,
)

ROOT = Path(__file__).resolve().parents[1]


def write_calibration(model_dir: Path, *, status: str = OK, temperature: float = 2.0, accuracy: float = 0.9,
                      chance: float = 0.5, accents: tuple[str, ...] = ("en-us", "en-gb")) -> AidCalibration:
    """A hand-made aid_calibration.json (no model.pt fingerprint)."""
    cal = AidCalibration(status=status, accents=list(accents), num_utts=200, accuracy=accuracy, chance=chance,
                         p_value=1e-9 if status == OK else 0.5, temperature=temperature)
    save_calibration(model_dir, cal)
    return cal


def test_binomial_tail_matches_exact_sum() -> None:
    for k, n, p in [(0, 10, 0.3), (5, 10, 0.5), (30, 100, 0.125), (100, 100, 0.9), (101, 100, 0.5)]:
        exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
        assert binomial_sf(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-15)


def test_overconfident_working_aid_gets_a_temperature_above_one() -> None:
    g = torch.Generator().manual_seed(0)
    n, a = 600, 4
    labels = torch.randint(0, a, (n,), generator=g)
    right = torch.rand(n, generator=g) < 0.7  # 70% correct, but always 98% sure
    pred = torch.where(right, labels, (labels + 1) % a)
    probs = torch.full((n, a), 0.02 / (a - 1))
    probs[torch.arange(n), pred] = 0.98
    c = fit_calibration(probs.log(), labels, [f"a{i}" for i in range(a)])
    assert c.status == OK and c.accuracy == pytest.approx(float(right.double().mean()))
    assert c.temperature > 1.5 and c.p_value < 1e-6
    assert c.ece_calibrated < 0.05 < 0.2 < c.ece_raw
    assert c.nll_calibrated < c.nll_raw


def test_chance_level_aid_is_not_working() -> None:
    labels = torch.arange(8).repeat(120)  # 960 utterances, 8 balanced accents
    probs = torch.full((960, 8), 0.05)
    probs[:, 6] = 0.65  # always the same accent, like the shipped model
    c = fit_calibration(probs.log(), labels, [f"a{i}" for i in range(8)])
    assert c.status == NOT_WORKING and c.accuracy == c.chance == 0.125 and c.distinct_predicted == 1
    view = AccentView(c)
    assert view.present({f"a{i}": float(probs[0, i]) for i in range(8)}) == (None, None)
    assert "no working accent ID" in view.note and "12.5%" in view.note


def test_view_states_and_calibrated_probability(tmp_path: Path) -> None:
    assert AccentView.for_model_dir(tmp_path).status == NOT_CALIBRATED
    assert AccentView.for_model_dir(tmp_path).present({"en-us": 0.9, "en-gb": 0.1}) == (None, None)
    assert AccentView.for_model_dir(tmp_path).note.startswith("accent ID not calibrated")
    write_calibration(tmp_path, temperature=2.0)
    view = AccentView.for_model_dir(tmp_path)
    accent, prob = view.present({"en-us": 0.9, "en-gb": 0.1})
    assert accent == "en-us" and prob == pytest.approx(3 / (3 + 1), abs=1e-4)  # sqrt(.9)/(sqrt(.9)+sqrt(.1))
    assert view.summary() == {"status": OK, "accuracy": 0.9, "chance": 0.5, "note": view.note}
    save_calibration(tmp_path, AidCalibration(status=NO_AID, accents=["x"]))
    assert AccentView.for_model_dir(tmp_path).note == "this model has no accent ID head"
    (tmp_path / cal_mod.FILENAME).write_text("{broken")
    with pytest.raises(cal_mod.UserError, match=r"aid_calibration\.json"):
        load_calibration(tmp_path)


def test_calibration_of_another_model_pt_is_not_used(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"weights v1")
    cal = write_calibration(tmp_path)
    cal.model_sha256 = cal_mod.model_fingerprint(tmp_path)
    save_calibration(tmp_path, cal)
    assert AccentView.for_model_dir(tmp_path).status == OK
    (tmp_path / "model.pt").write_bytes(b"weights v2")
    view = AccentView.for_model_dir(tmp_path)
    assert view.present({"en-us": 0.9, "en-gb": 0.1}) == (None, None) and "another model.pt" in view.note


@pytest.fixture(scope="module")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.recognizer_helpers import make_random_model_dir

    return make_random_model_dir(tmp_path_factory.mktemp("cal") / "model", seed=3)


def _transcribe(model: Path, wav: str) -> dict:
    from qifusion.decode.transcribe import transcribe_files

    out = io.StringIO()
    transcribe_files(model_dir=model, files=[Path(wav)], out=out, mode="ctc_greedy")
    return json.loads(out.getvalue())


def test_calibrate_command_and_transcribe_output(random_model: Path, synth_corpus: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "model"
    shutil.copytree(random_model, model)
    wav = (synth_corpus / "train" / "wav.scp").read_text().split("\n", 1)[0].split(maxsplit=1)[1]
    before = _transcribe(model, wav)
    assert before["accent"] is None and before["accent_prob"] is None
    assert before["accent_id"]["status"] == NOT_CALIBRATED
    assert "accent ID not calibrated" in capsys.readouterr().err

    assert main(["calibrate", "--model", str(model), "--data", str(synth_corpus / "train")]) == 0
    data = json.loads((model / cal_mod.FILENAME).read_text())
    assert data["num_utts"] == 18 and data["chance"] == pytest.approx(1 / 3, abs=1e-6)
    assert data["model_sha256"] == cal_mod.model_fingerprint(model) and data["temperature"] > 0
    assert data["status"] == (OK if data["p_value"] < cal_mod.ALPHA else NOT_WORKING)
    assert not list(model.glob(".*.tmp"))  # atomic write left no temp file

    after = _transcribe(model, wav)
    assert after["accent_id"]["status"] == data["status"]
    assert after["accent_id"]["accuracy"] == data["accuracy"]
    assert (after["accent"] is None) == (data["status"] != OK)

    write_calibration(model, temperature=3.0, accents=tuple(data["accents"]), accuracy=0.95, chance=1 / 3)
    shown = _transcribe(model, wav)
    assert shown["accent"] in data["accents"] and shown["accent_id"]["accuracy"] == 0.95
    raw = {}
    from qifusion.data.audio import read_audio
    from qifusion.data.features import compute_fbank
    from qifusion.decode.offline import decode_features
    from qifusion.decode.recognizer import Recognizer

    rec = Recognizer.from_model_dir(model, mode="ctc_greedy")
    decode_features(rec, compute_fbank(read_audio(wav)), chunk_size=-1, left_chunks=-1, accent_probs=raw)
    scaled = {a: math.exp(math.log(p) / 3.0) for a, p in raw.items()}
    assert shown["accent_prob"] == pytest.approx(max(scaled.values()) / sum(scaled.values()), abs=1e-4)
    assert shown["segments"][0]["accent"] == shown["accent"]


def test_shipped_models_are_calibrated_and_say_so() -> None:
    for name, status in [("accents-en-qifusion", NOT_WORKING), ("accents-en-baseline", NO_AID)]:
        d = ROOT / "models" / name
        view = AccentView.for_model_dir(d)
        assert view.status == status, name
        assert view.cal is not None and view.cal.model_sha256 == cal_mod.model_fingerprint(d)
    assert AccentView.for_model_dir(ROOT / "models" / "accents-en-qifusion").cal.num_utts == 960


def test_calibrate_needs_accent_labels(random_model: Path, synth_corpus: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "dev"
    data.mkdir()
    for name in ("wav.scp", "text"):
        shutil.copy(synth_corpus / "dev" / name, data / name)
    model = tmp_path / "model"
    shutil.copytree(random_model, model)
    assert main(["calibrate", "--model", str(model), "--data", str(data)]) == 2
    assert "calibration needs utt2accent" in capsys.readouterr().err
    assert not (model / cal_mod.FILENAME).exists()
