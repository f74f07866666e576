"""Evaluate one finished run of the accuracy study: ``python -m benchmarks.accuracy.eval_run NAME``.

Averages the run's last step checkpoints into ``exp/study/NAME/model`` (a run trained on a lent GPU by
``gpu_train.sh`` brings that average back instead, stored as float16), decodes the test split in every
mode x chunk size, the dev split (rescoring, full and chunk 16) and, for the main runs, the held-back
set, probes how much accent each encoder block carries, and writes
``benchmarks/results/accuracy/NAME.json`` (atomically; an existing result is kept unless ``--force``,
except that a main run's result without the held-back set gets it added).
Per-utterance error counts are stored so the report can bootstrap.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.accuracy.probe import block_probe
from benchmarks.accuracy.spec import (
    AVERAGE_LAST,
    BY_NAME,
    CORPUS,
    EXP,
    MAX_STEPS,
    RESULTS,
    ROOT,
    Run,
    trained_on,
)
from qifusion.decode.run import decode_dir
from qifusion.eval.metrics import cer_counts, cer_units, wer_counts, wer_units
from qifusion.fileio import atomic_write_text
from qifusion.modeldir import load_model_dir
from qifusion.train.average import average_checkpoints

HELDOUT = ROOT / "data" / "heldout" / "test"  # qifusion synth --preset heldout --out data/heldout --seed 0
MODES = ("ctc_greedy", "attention_rescoring")
CHUNKS = (-1, 16, 8, 4)


def average(run: Run, *, out: Path | None = None, fp16: bool = False) -> Path:
    """Average the last ``AVERAGE_LAST`` step checkpoints (every 100 steps) into ``out`` (EXP/NAME/model)."""
    exp = EXP / run.name
    files = [f"step_{MAX_STEPS - 100 * i}.pt" for i in reversed(range(AVERAGE_LAST))]
    if trained_on(exp) != "cpu" and not all((exp / f).is_file() for f in files):
        return _averaged_elsewhere(run, out=out, fp16=fp16)
    return average_checkpoints(exp_dir=exp, num=AVERAGE_LAST, files=files, out_dir=out or exp / "model",
                               fp16=fp16)


def _averaged_elsewhere(run: Run, *, out: Path | None, fp16: bool) -> Path:
    """The fp16 average that gpu_train.sh brought back (its step checkpoints stayed on the GPU machine),
    as EXP/NAME/model or copied file by file (atomically) into ``out``."""
    src = EXP / run.name / "model"
    if not (src / "model.pt").is_file():
        raise SystemExit(f"{run.name}: no step checkpoints here and no averaged model {src}")
    if out is None or out.resolve() == src.resolve():
        return src
    if not fp16:
        raise SystemExit(f"{run.name}: only its float16 average came back from the GPU machine")
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        tmp = out / f".{f.name}.tmp"
        shutil.copyfile(f, tmp)
        os.replace(tmp, out / f.name)
    return out


def decode_set(model_dir: Path, data: Path, out: Path, *, modes: tuple[str, ...] = (),
               chunks: tuple[int, ...] = (), lm: Path | None = None,
               pairs: tuple[tuple[str, int], ...] = ()) -> dict[str, Any]:
    """Decode ``data`` in every mode x chunk, then in each (mode, chunk) of ``pairs``; per-utterance char
    and word errors and AID predictions. ``lm``: the LM dir of the LM modes (``lm_rescoring``,
    ``lm_beam``), unused by the others."""
    from qifusion.decode.options import LM_MODES

    res: dict[str, Any] = {"data": str(data.relative_to(ROOT) if data.is_relative_to(ROOT) else data),
                           "modes": {}}
    for mode, chunk in [*((m, c) for m in modes for c in chunks), *pairs]:
        key = f"{mode}@{'full' if chunk < 0 else chunk}"
        d = out / key.replace("@", "_")
        rep = decode_dir(model_dir=model_dir, data_dir=data, out_dir=d, mode=mode, chunk_size=chunk,
                         batch_size=16, progress=False, lm=lm if mode in LM_MODES else None)
        rows = [json.loads(line) for line in (d / "results.jsonl").read_text().splitlines()]
        rows.sort(key=lambda r: r["utt_id"])
        if "utts" not in res:
            res["utts"] = {"ids": [r["utt_id"] for r in rows], "accent": [r["accent"] for r in rows],
                           "ref_chars": [len(cer_units(r["ref"])) for r in rows],
                           "ref_words": [len(wer_units(r["ref"])) for r in rows]}
        assert [r["utt_id"] for r in rows] == res["utts"]["ids"], "decodes disagree on utterances"
        res["modes"][key] = {
            "cer": rep["cer"], "wer": rep["wer"], "rtf": rep["rtf"],
            "per_accent": {a: v["cer"] for a, v in rep["per_accent"].items()},
            "aid_accuracy": rep.get("aid_accuracy"),
            "errors": [cer_counts(r["ref"], r["hyp"]).errors for r in rows],
            "word_errors": [wer_counts(r["ref"], r["hyp"]).errors for r in rows],
            "pred_accent": [r.get("pred_accent") for r in rows],
        }
        print(f"  {data.parent.name}/{data.name} {key}: CER {rep['cer']:.2f}"
              + (f" AID {rep['aid_accuracy']:.3f}" if rep.get("aid_accuracy") is not None else ""),
              flush=True)
    return res


def train_summary(exp: Path) -> dict[str, Any]:
    """Training curve summary from train_log.jsonl: dev metrics per epoch, speed, final loss."""
    rows = [json.loads(x) for x in (exp / "train_log.jsonl").read_text().splitlines() if x.strip()]
    tr = [r for r in rows if r["kind"] == "train"]
    return {
        "steps": tr[-1]["step"] if tr else 0,
        "final_loss": sum(r["loss"] for r in tr[-5:]) / max(1, len(tr[-5:])),
        "audio_per_s_median": sorted(r["audio_per_s"] for r in tr)[len(tr) // 2] if tr else None,
        "epochs": [{k: r[k] for k in r if k != "kind"} for r in rows if r["kind"] == "epoch"],
        "curve": [[r["step"], round(r["loss"], 3)] for r in tr],
    }


def wants_heldout(run: Run) -> bool:
    return run.group == "main" and HELDOUT.exists()


def decode_heldout(run: Run, model_dir: Path) -> dict[str, Any]:
    """The held-back set in both modes at full context and chunk 16."""
    return decode_set(model_dir, HELDOUT, EXP / run.name / "decode" / "heldout", modes=MODES, chunks=(-1, 16))


def write_result(out_json: Path, result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_json, json.dumps(result, separators=(",", ":")) + "\n")


def add_heldout(run: Run, out_json: Path) -> Path:
    """Complete an existing result with the held-back set when it lacks it (e.g. a run that became a main
    run after its evaluation, or data/heldout created later); otherwise leave the result as it is."""
    result = json.loads(out_json.read_text())
    if not wants_heldout(run) or "heldout" in result["sets"]:
        print(f"{run.name}: {out_json} exists (use --force to redo)")
        return out_json
    result["sets"]["heldout"] = decode_heldout(run, average(run))
    write_result(out_json, result)
    print(f"{run.name}: added the held-back set to {out_json}")
    return out_json


def evaluate(run: Run, *, force: bool) -> Path:
    out_json = RESULTS / f"{run.name}.json"
    if out_json.exists() and not force:
        return add_heldout(run, out_json)
    t0 = time.time()
    exp = EXP / run.name
    model_dir = average(run)
    loaded = load_model_dir(model_dir)
    model = loaded.model
    result: dict[str, Any] = {
        "run": run.name, "group": run.group, "config": run.config, "seed": run.seed,
        "overrides": run.all_overrides(), "without_accent": run.without_accent,
        "num_params": sum(p.numel() for p in model.parameters()), "accents": loaded.accents,
        "train": train_summary(exp), "trained_on": trained_on(exp), "sets": {},
    }
    if model.laf is not None:
        result["laf"] = {"layers": list(model.laf.layers),
                         "weights": [round(float(w), 5) for w in model.laf.weights().detach()]}
    corpus = ROOT / CORPUS
    result["sets"]["test"] = decode_set(model_dir, corpus / "test", exp / "decode" / "test", modes=MODES,
                                        chunks=CHUNKS)
    result["sets"]["dev"] = decode_set(model_dir, corpus / "dev", exp / "decode" / "dev",
                                       modes=("attention_rescoring",), chunks=(-1, 16))
    if wants_heldout(run):
        result["sets"]["heldout"] = decode_heldout(run, model_dir)
    if run.without_accent is None:
        result["block_probe"] = block_probe(model, config=loaded.config, accents=loaded.accents,
                                            train_dir=corpus / "dev", test_dir=corpus / "test")
    result["eval_wall_s"] = round(time.time() - t0, 1)
    write_result(out_json, result)
    print(f"{run.name}: wrote {out_json} ({result['eval_wall_s']} s)")
    return out_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("names", nargs="+", choices=sorted(BY_NAME))
    ap.add_argument("--force", action="store_true", help="redo an existing result")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    for name in args.names:
        evaluate(BY_NAME[name], force=args.force)


if __name__ == "__main__":
    main()
