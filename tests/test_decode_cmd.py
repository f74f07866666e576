"""`qifusion decode` end to end on the synthetic corpus with a random-weight model dir.

A random model gives meaningless text, so this checks the mechanics: files, report shape, numbers
recomputed from hyp.txt with jiwer, batching invariance, bad files skipped and counted, the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jiwer
import pytest
from recognizer_helpers import make_random_model_dir

from qifusion.cli import main
from qifusion.decode.run import decode_dir
from qifusion.errors import UserError
from qifusion.eval.metrics import cer_units, wer_units
from qifusion.eval.report import REPORT_KEYS


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_model_dir(tmp_path_factory.mktemp("decode") / "model", seed=1)


@pytest.fixture(scope="module")
def data_dir(synth_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dev + test of the synthetic corpus (6 utterances, 3 accents) as one Kaldi dir."""
    from qifusion.data.manifest import load_data_dir, write_kaldi_dir

    utts = load_data_dir(synth_corpus / "dev") + load_data_dir(synth_corpus / "test")
    out = tmp_path_factory.mktemp("decode") / "data"
    write_kaldi_dir(utts, out)
    return out


def _read_map(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition(" ")
        out[k] = v
    return out


@pytest.mark.parametrize(("mode", "chunk"), [("ctc_greedy", -1), ("ctc_prefix_beam", 4),
                                             ("attention", 8), ("attention_rescoring", -1)])
def test_decode_dir_outputs(model_dir: Path, data_dir: Path, tmp_path: Path, mode: str, chunk: int) -> None:
    rep = decode_dir(model_dir=model_dir, data_dir=data_dir, out_dir=tmp_path, mode=mode, chunk_size=chunk,
                     left_chunks=-1, beam_size=4, batch_size=4, backend="torch", progress=False)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk == rep and tuple(rep) == REPORT_KEYS
    assert rep["num_utts"] == 6 and rep["mode"] == mode and rep["chunk_size"] == chunk
    assert set(rep["per_accent"]) == {"en-us", "en-gb-scotland", "en-029"}
    assert all(v["num_utts"] == 2 for v in rep["per_accent"].values())
    assert 0.0 <= rep["aid_accuracy"] <= 1.0 and rep["rtf"] > 0
    assert sum(map(sum, rep["aid_confusion"]["matrix"])) == 6
    # the CER/WER in the report are those of hyp.txt against the reference text (jiwer)
    hyp, ref = _read_map(tmp_path / "hyp.txt"), _read_map(data_dir / "text")
    assert list(hyp) == list(ref)
    ids = list(ref)
    cer_ref = [" ".join(cer_units(ref[u])) for u in ids]
    cer_hyp = [" ".join(cer_units(hyp[u])) for u in ids]
    assert rep["cer"] == pytest.approx(100 * jiwer.wer(cer_ref, cer_hyp), abs=1e-3)
    wer_hyp = [" ".join(wer_units(hyp[u])) for u in ids]
    assert rep["wer"] == pytest.approx(100 * jiwer.wer([" ".join(wer_units(ref[u])) for u in ids], wer_hyp),
                                       abs=1e-3)
    for name in ("report.md", "cer_per_accent.png", "aid_confusion.png", "results.jsonl"):
        assert (tmp_path / name).stat().st_size > 0
    assert "en-gb-scotland" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("mode", ["ctc_greedy", "attention_rescoring"])
def test_batching_does_not_change_results(model_dir: Path, data_dir: Path, tmp_path: Path, mode: str) -> None:
    for bs in (1, 6):
        decode_dir(model_dir=model_dir, data_dir=data_dir, out_dir=tmp_path / str(bs), mode=mode,
                   chunk_size=4, left_chunks=2, beam_size=3, batch_size=bs, backend="torch", progress=False)
    assert (tmp_path / "1" / "hyp.txt").read_text() == (tmp_path / "6" / "hyp.txt").read_text()


def test_bad_files_are_skipped_and_counted(model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "data"
    shutil.copytree(data_dir, d)
    (tmp_path / "empty.wav").write_bytes(b"")
    with open(d / "wav.scp", "a") as f:
        f.write(f"zz_missing {tmp_path / 'nope.wav'}\nzz_empty {tmp_path / 'empty.wav'}\n")
    with open(d / "text", "a") as f:
        f.write("zz_missing hello\nzz_empty hello\n")
    (d / "data.jsonl").unlink(missing_ok=True)
    rep = decode_dir(model_dir=model_dir, data_dir=d, out_dir=tmp_path / "out", mode="ctc_greedy",
                     chunk_size=-1, left_chunks=-1, beam_size=2, batch_size=3, progress=False)
    assert rep["num_utts"] == 6
    assert "2 unreadable or empty audio" in (tmp_path / "out" / "report.md").read_text()


def test_without_accent_labels(model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    for name in ("wav.scp", "text"):
        shutil.copy(data_dir / name, d / name)
    rep = decode_dir(model_dir=model_dir, data_dir=d, out_dir=tmp_path / "out", mode="ctc_greedy",
                     chunk_size=-1, left_chunks=-1, beam_size=2, batch_size=8, progress=False)
    assert rep["aid_accuracy"] is None and rep["aid_confusion"] is None
    assert list(rep["per_accent"]) == ["unknown"]
    assert not (tmp_path / "out" / "aid_confusion.png").exists()


def test_cli_decode_and_errors(model_dir: Path, data_dir: Path, tmp_path: Path, capsys) -> None:
    rc = main(["decode", "--model", str(model_dir), "--data", str(data_dir), "--out", str(tmp_path / "o"),
               "--mode", "ctc_prefix_beam", "--chunk-size", "16", "--beam-size", "3"])
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rc == 0 and report["chunk_size"] == 16
    table = capsys.readouterr().out.splitlines()  # the per-accent table, as `make demo` shows it
    assert table[0].split() == ["accent", "utts", "CER", "%", "WER", "%"]
    for accent, row in report["per_accent"].items():
        assert f"{accent:<18}{row['num_utts']:>6}{row['cer']:>8.2f}{row['wer']:>8.2f}" in table
    assert table[len(report["per_accent"]) + 1].startswith("all")
    rc = main(["decode", "--model", str(tmp_path / "nomodel"), "--data", str(data_dir),
               "--out", str(tmp_path)])
    assert rc == 2 and "nomodel" in capsys.readouterr().err
    with pytest.raises(UserError, match="chunk-size"):
        decode_dir(model_dir=model_dir, data_dir=data_dir, out_dir=tmp_path, mode="ctc_greedy", chunk_size=0,
                   left_chunks=-1, beam_size=2, batch_size=2, backend="torch")


def test_oracle_model_is_given_the_true_accent(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """decode_dir passes each utterance's true accent id to an oracle-accent model (-1 when unknown)."""
    import torch
    from recognizer_helpers import ACCENTS

    from qifusion.config import load_config
    from qifusion.data.manifest import load_data_dir
    from qifusion.data.tokenizer import Tokenizer
    from qifusion.modeldir import save_model_dir
    from qifusion.models.model import QifusionModel

    root = Path(__file__).resolve().parents[1]
    off = ["model.accent.use_laf=false", "model.accent.use_aid=false", "model.accent.use_fusion=false"]
    cfg = load_config(root / "conf" / "tiny.yaml", [*off, "model.accent.oracle_accent=true"])
    tok = Tokenizer.build(["the quick brown fox jumps over the lazy dog's back"])
    accents = [a for a in ACCENTS if a != "en-029"]  # en-029 utterances are unknown to this model
    torch.manual_seed(0)
    model = QifusionModel(cfg.model, vocab_size=tok.vocab_size, num_accents=len(accents))
    mdir = save_model_dir(tmp_path / "oracle", model=model, config=cfg, tokenizer=tok, accents=accents,
                          card={})
    seen: list[int] = []
    encode = QifusionModel.encode

    def spy(self, *args, **kwargs):
        seen.extend(kwargs["accents"].tolist())
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(QifusionModel, "encode", spy)
    decode_dir(model_dir=mdir, data_dir=data_dir, out_dir=tmp_path / "out", mode="ctc_greedy", batch_size=2,
               progress=False)
    want = [accents.index(u.accent) if u.accent in accents else -1 for u in load_data_dir(data_dir)]
    assert seen == want and -1 in want and len(set(want)) == 3


def test_version(capsys) -> None:
    from qifusion import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"qifusion {__version__}"
