"""Results v2 (issue 21): the accuracy study on the ``accents`` corpus with the committed recipe.

    python -m benchmarks.recipe run new-qifusion-s2-accents --jobs 1 --threads 2   # train (<= 1 h), dev
    python -m benchmarks.accuracy.v2 eval new-qifusion-s2-accents                  # test + dev decodes

A main run of the study is a recipe run of the committed configs on ``accents`` (``new-SYSTEM-sSEED-accents``,
:mod:`benchmarks.recipe`, which trains it and decodes dev). Its final model (the average of its last
checkpoints, chosen by no test number) is decoded here on the test split (CTC greedy and attention
rescoring, each also with the run's word LM by ``lm_rescoring``; full context and chunk 16; rescoring
also at chunks 8 and 4) and on dev (attention rescoring, full and chunk 16: what the shipped model is
chosen by); every encoder block's accent is probed (:mod:`benchmarks.accuracy.probe`) and the LAF
weights are read. Per-utterance char and word errors and accent predictions are stored, so the report
can bootstrap over utterances and seeds. ``exp/`` is not kept from one session to the next here, so a
run is evaluated in the session it trained in.
Results: ``benchmarks/results/accuracy_v2/RUN.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import recipe
from benchmarks.accuracy.eval_run import decode_set, train_summary

RESULTS = recipe.ROOT / "benchmarks" / "results" / "accuracy_v2"
TEST_MODES = ("ctc_greedy", "attention_rescoring", "lm_rescoring")
CHUNKS = (-1, 16)
SMALL_CHUNKS = (("attention_rescoring", 8), ("attention_rescoring", 4))  # test only: the chunk-size curve
DEV_MODES = ("attention_rescoring",)


def main_run(name: str) -> tuple[str, int]:
    """(system, seed) of a main run's name; a clear error for any other recipe run name."""
    rec, system, seed = recipe.parse(name)
    if rec != "new" or not name.endswith("-accents"):
        raise SystemExit(f"{name}: a main run of results v2 is new-SYSTEM-sSEED-accents (the committed "
                         "configs on the accents corpus)")
    return system, seed


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the state dict (names and raw tensor bytes, in name order): equal for bitwise-equal
    weights whatever file they were saved in, so a re-trained run can be checked against this one."""
    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def evaluate(name: str, *, force: bool = False) -> Path:
    """Decode a finished main run on test and dev; write ``RESULTS/NAME.json`` (atomically). An existing
    result is kept unless ``force``."""
    from benchmarks.accuracy.probe import block_probe
    from qifusion.fileio import atomic_write_text
    from qifusion.modeldir import load_model_dir

    system, seed = main_run(name)
    out_json = RESULTS / f"{name}.json"
    if out_json.exists() and not force:
        print(f"{name}: {out_json} exists (use --force to redo)")
        return out_json
    exp = recipe.EXP / name
    model_dir = exp / "final"
    dev_json = recipe.RESULTS / f"{name}.json"
    if not (model_dir / "model.pt").is_file() or not dev_json.is_file():
        raise SystemExit(f"{name}: not trained and evaluated on dev here (no {model_dir / 'model.pt'} or "
                         f"{dev_json}); run `python -m benchmarks.recipe run {name}` first")
    dev_result = json.loads(dev_json.read_text())
    corpus = recipe.corpus(name)
    t0 = time.time()
    loaded = load_model_dir(model_dir)
    model = loaded.model
    lm = recipe.build_run_lm(model_dir, corpus)
    result: dict[str, Any] = {
        "run": name, "group": "main", "system": system, "seed": seed, "corpus": corpus.name,
        "corpus_fingerprint": recipe.corpus_fingerprint(corpus), "config": recipe.CONFIGS[system],
        "converged": dev_result["converged"], "dev_greedy_cer": dev_result["dev"]["ctc_greedy"]["cer"],
        "final_averages": dev_result["final_averages"],
        "num_params": sum(p.numel() for p in model.parameters()), "accents": loaded.accents,
        "weights_sha256": weights_sha256(model),
        "train": train_summary(exp), "sets": {},
    }
    if model.laf is not None:
        result["laf"] = {"layers": list(model.laf.layers),
                         "weights": [round(float(w), 5) for w in model.laf.weights().detach()]}
    decodes = exp / "study_v2"
    result["sets"]["test"] = decode_set(model_dir, corpus / "test", decodes / "test", modes=TEST_MODES,
                                        chunks=CHUNKS, lm=lm, pairs=SMALL_CHUNKS)
    result["sets"]["dev"] = decode_set(model_dir, corpus / "dev", decodes / "dev", modes=DEV_MODES,
                                       chunks=CHUNKS)
    result["block_probe"] = block_probe(model, config=loaded.config, accents=loaded.accents,
                                        train_dir=corpus / "dev", test_dir=corpus / "test")
    result["eval_wall_s"] = round(time.time() - t0, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_json, json.dumps(result, separators=(",", ":")) + "\n")
    print(f"{name}: wrote {out_json} ({result['eval_wall_s']} s)")
    return out_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval", help="decode finished main runs on test and dev")
    e.add_argument("names", nargs="+")
    e.add_argument("--force", action="store_true", help="redo an existing result")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    for name in args.names:
        main_run(name)
    for name in args.names:
        evaluate(name, force=args.force)


if __name__ == "__main__":
    main()
