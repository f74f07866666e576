"""Results v2 (issue 21): the accuracy study on the ``accents`` corpus with the committed recipe.

    python -m benchmarks.recipe run new-qifusion-s2-accents --jobs 1 --threads 2   # train (<= 1 h), dev
    python -m benchmarks.accuracy.v2 eval new-qifusion-s2-accents                  # test + dev decodes

A run of the study is a run of :mod:`benchmarks.recipe` (which trains it and decodes dev): a main run is
the committed configs on ``accents`` (``new-SYSTEM-sSEED-accents``); the others (:func:`study_run`) are
a variant of them (``benchmarks.recipe.VARIANTS``: ablations, loss-weight sweeps) or the committed
configs on a subset of the accents (``benchmarks.accents_subsets``: an unseen accent, fewer accents).
A run's final model (the average of its last checkpoints, chosen by no test number) is decoded here on
the test split (CTC greedy and attention rescoring, each also with the run's word LM by ``lm_rescoring``;
full context and chunk 16; rescoring also at chunks 8 and 4) and on dev (attention rescoring, full and
chunk 16: what the shipped model is chosen by); every encoder block's accent is probed
(:mod:`benchmarks.accuracy.probe`; not for the accent-subset runs) and the LAF weights are read.
Per-utterance char and word errors and accent predictions are stored, so the report can bootstrap over
utterances and seeds. ``exp/`` is not kept from one session to the next here, so a run is evaluated in
the session it trained in. Results: ``benchmarks/results/accuracy_v2/RUN.json``.
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
REPRODUCED = recipe.ROOT / "exp" / "reproduce"  # runs trained again to their recorded step (not committed)
TEST_MODES = ("ctc_greedy", "attention_rescoring", "lm_rescoring")
CHUNKS = (-1, 16)
SMALL_CHUNKS = (("attention_rescoring", 8), ("attention_rescoring", 4))  # test only: the chunk-size curve
DEV_MODES = ("attention_rescoring",)


# the study's runs beside the main pair (one seed each): a variant of the committed configs
# (``benchmarks.recipe.VARIANTS``) on ``accents``, or the committed configs on a subset of its accents
VARIANT_GROUPS = {"oracle": ("ablation", "baseline"), "matched": ("ablation", "baseline"),
                  "nofusion": ("ablation", "qifusion"), "nolaf": ("ablation", "qifusion"),
                  "ctcfuse": ("ablation", "qifusion"), "aid03": ("sweep", "qifusion"),
                  "aid3": ("sweep", "qifusion"), "ctc03": ("sweep", "qifusion"),
                  "ctc07": ("sweep", "qifusion")}
SUBSET_GROUPS = {"accents8": "unseen", "accents6": "scaling", "accents4": "scaling"}


def study_run(name: str) -> tuple[str, str, int]:
    """(group, system, seed) of a results-v2 run name: ``main`` for ``new-SYSTEM-sSEED-accents``, the
    variant's group for ``VARIANT-SYSTEM-sSEED-accents``, ``unseen`` / ``scaling`` for
    ``new-SYSTEM-sSEED-accents8`` / ``-accents6`` / ``-accents4``; a clear error for any other name."""
    try:
        rec, system, seed = recipe.parse(name)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    corpus = name.rsplit("-", 1)[-1]
    if rec == "new" and corpus == "accents":
        return "main", system, seed
    if rec == "new" and corpus in SUBSET_GROUPS:
        return SUBSET_GROUPS[corpus], system, seed
    if rec in VARIANT_GROUPS and corpus == "accents" and VARIANT_GROUPS[rec][1] == system:
        return VARIANT_GROUPS[rec][0], system, seed
    variants = ", ".join(f"{v}-{s}" for v, (_, s) in VARIANT_GROUPS.items())
    raise SystemExit(f"{name}: a results-v2 run is new-SYSTEM-sSEED-accents (main), "
                     f"new-SYSTEM-sSEED-{{{','.join(SUBSET_GROUPS)}}} or VARIANT-SYSTEM-sSEED-accents with "
                     f"VARIANT-SYSTEM one of {variants}")


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the state dict (names and raw tensor bytes, in name order): equal for bitwise-equal
    weights whatever file they were saved in, so a re-trained run can be checked against this one."""
    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def evaluate(name: str, *, force: bool = False) -> Path:
    """Decode a finished run of the study on test and dev; write ``RESULTS/NAME.json`` (atomically).
    An existing result is kept unless ``force``."""
    from benchmarks.accuracy.probe import block_probe
    from qifusion.fileio import atomic_write_text
    from qifusion.modeldir import load_model_dir

    group, system, seed = study_run(name)
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
        "run": name, "group": group, "recipe": recipe.parse(name)[0], "system": system, "seed": seed,
        "corpus": corpus.name,
        "corpus_fingerprint": recipe.corpus_fingerprint(corpus), "config": recipe.CONFIGS[system],
        "converged": dev_result["converged"], "dev_greedy_cer": dev_result["dev"]["ctc_greedy"]["cer"],
        "final_averages": dev_result["final_averages"],
        "final_step": json.loads((model_dir / "card.json").read_text()).get("steps"),  # to re-train it to
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
    if group not in SUBSET_GROUPS.values():  # the probe's classes are the model's accents: all of test
        result["block_probe"] = block_probe(model, config=loaded.config, accents=loaded.accents,
                                            train_dir=corpus / "dev", test_dir=corpus / "test")
    result["eval_wall_s"] = round(time.time() - t0, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_json, json.dumps(result, separators=(",", ":")) + "\n")
    print(f"{name}: wrote {out_json} ({result['eval_wall_s']} s)")
    return out_json


def _recorded_cpus(name: str) -> list[str]:
    """The CPU models the run trained on, from its recipe result (``cpus``; empty when not recorded)."""
    path = recipe.RESULTS / f"{name}.json"
    cpus = json.loads(path.read_text()).get("cpus", []) if path.is_file() else []
    return [c.removesuffix(", at evaluation") for c in cpus]


def reproduce(name: str, *, threads: int = 2) -> Path:
    """Train run ``name`` again into ``REPRODUCED/NAME`` (same config, overrides and seed) for exactly the
    optimizer steps its result records, with no time budget, and check its final weights against the
    recorded ``weights_sha256``. Returns the re-trained model dir; SystemExit when training fails or the
    weights differ. This is how a run's model comes back in a later session (``exp/`` does not last)."""
    from benchmarks.speed.speed_common import cpu_model
    from qifusion.modeldir import load_model_dir

    study_run(name)
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"{name}: no result {path} to reproduce; evaluate the run first")
    res = json.loads(path.read_text())
    trained_on = _recorded_cpus(name)
    here = cpu_model()
    other_cpu = bool(trained_on) and here not in trained_on
    if other_cpu:  # float kernels differ between CPU models: equal weights are expected on the same one
        print(f"{name}: trained on {', '.join(trained_on)}, re-trained here on {here}: the weights may "
              "differ")
    exp = REPRODUCED / name
    rc = recipe.train(name, threads=threads, exp=exp,
                      extra=["train.max_minutes=0", f"train.max_steps={res['final_step']}"])
    if rc != 0:
        raise SystemExit(f"{name}: re-training failed (exit {rc}), see {exp.parent / exp.name}.log")
    got = weights_sha256(load_model_dir(exp / "final").model)
    if got != res["weights_sha256"]:
        raise SystemExit(f"{name}: the re-trained weights differ from the run's ({got[:12]} against "
                         f"{res['weights_sha256'][:12]}); {exp / 'final'} is not that model"
                         + (f" (trained on {', '.join(trained_on)}, re-trained on {here})" if other_cpu
                            else ""))
    print(f"{name}: re-trained to step {res['final_step']}, weights bitwise equal -> {exp / 'final'}")
    return exp / "final"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval", help="decode finished runs of the study on test and dev")
    e.add_argument("names", nargs="+")
    e.add_argument("--force", action="store_true", help="redo an existing result")
    r = sub.add_parser("reproduce", help="re-train evaluated runs to their step, check the weights")
    r.add_argument("names", nargs="+")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    for name in args.names:
        study_run(name)
    for name in args.names:
        if args.cmd == "eval":
            evaluate(name, force=args.force)
        else:
            reproduce(name)


if __name__ == "__main__":
    main()
