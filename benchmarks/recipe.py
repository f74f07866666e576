"""Does the training recipe converge on every seed within an hour of this CPU? (issue 17)

    python -m benchmarks.recipe run new-baseline-s0 new-qifusion-s0 --jobs 2   # resumable; 1 thread each
    python -m benchmarks.recipe run new-baseline-s0 --jobs 1 --threads 2      # the issue's "2 threads, idle"
    python -m benchmarks.recipe eval new-baseline-s0                         # dev decode + result JSON
    python -m benchmarks.recipe_report                                       # docs/recipe.md + curve PNG
    python -m benchmarks.recipe explore v2-baseline-s2=exp/recipe/A ...      # record a hand-run experiment

A run is ``RECIPE-SYSTEM-sSEED``: ``new`` is ``conf/{baseline,qifusion}_small.yaml`` as committed (peak
lr 2e-3, CTC weight 0.5, feature cache filled before training, batches bucketed by their augmented
lengths, a bf16 autocast where the CPU has bf16 matmuls and float32 elsewhere), trained with the heap
allocator ``qifusion train`` picks (jemalloc under the bf16 autocast, :mod:`qifusion.malloc`) and torch's
threads spinning briefly before they sleep (:mod:`qifusion.omp`); ``bfj`` is the same under jemalloc
without page decay (its first run was made before the configs adopted bf16); ``bf`` is ``bfj`` under the
system's malloc (its run, ``bf-baseline-s3-accents``, trained with oneDNN's primitive cache at 32768
entries instead of 1024: speed and memory only, docs/train.md "bf16 on CPU"); ``fp`` is the committed
configs before 2026-12-08 02:00 UTC: float32 steps under the system's malloc (its runs were named
``new-*`` until then; every recipe below trained in float32 under the system's malloc too, before
``qifusion train`` preloaded jemalloc by itself, docs/train.md "Heap allocator"); ``pw`` is ``fp``
trained with passive waits and no spin (slower steps, the same batches; Qifusion seed 2 had the same
weights at every step both ways, the baseline's seed 2 not quite, docs/train.md "Threads": the seed-2
main runs until 2026-12-07 11:00 UTC, named ``new-*`` until then, and every run before them); ``ba`` is
``fp`` with the cache filled on first use, inside the training steps (the committed
configs on 2026-12-07 until 06:00 UTC; its runs were named ``new-*`` until then); ``c5fc`` is ``ba`` with
batches bucketed by the utterances' own lengths (the committed configs before 2026-12-07, its runs were
named ``new-*`` until then); ``lr1`` is the recipe
before 2026-12-06 (peak 1e-3, CTC weight 0.3, no cache; its runs were named ``new-*`` until then); ``lr2``
and ``lr4`` are ``lr1`` with a peak of 2e-3 and 4e-3 (``train.lr``);
``cd2`` is ``lr2`` ending in a cool-down of the lr to 0 over the last 20% of the minutes (``train.cooldown``);
``c5`` is ``lr2`` with a CTC weight of 0.5 instead of 0.3 (``model.ctc_weight``); ``c5fc`` is ``c5`` with
the training fbank computed once per (utterance, speed factor) and read back (``data.feature_cache``);
``v6`` is ``lr1`` without VTLP, SpecAugment from epoch 4 and the final average of the last 4 checkpoints
(``data.vtlp``, ``data.spec_aug.start_epoch``, ``train.average_last``); ``v5`` also puts back the
144-channel sub-sampling convs (``model.encoder.subsampling_channels``); ``v3``
adds to that the dropout (0.1) and the SpecAugment from epoch 1 that the committed recipe leaves out
of the hour; ``old`` adds to that the overrides of the first accuracy study (700 steps of 100 s batches,
400 warm-up steps to lr 2e-3, cosine to ~0, no embedding scale). Every run trains on the ``benchmark`` preset
(``qifusion synth --out data/benchmark --preset benchmark --seed 0``), or with a ``-accents`` suffix
(``new-qifusion-s0-accents``) on the ``accents`` preset (``--out data/accents --preset accents``),
for at most ``MINUTES`` minutes of training time (``train.max_minutes``; dev passes excluded) with
one thread, two runs side by side (``--threads``, ``--jobs``), and evaluates dev every ``DEV_EVERY`` steps:
the same greedy search and CER as ``qifusion decode``. Dev only: the test split is never read here.
Results: ``benchmarks/results/recipe/RUN.json``.

Results v2 (issue 21, :mod:`benchmarks.accuracy.v2`) trains its runs here too: ``VARIANTS`` (ablations
and loss-weight sweeps of the committed configs: ``nofusion-qifusion-s2-accents``) and the committed
configs on a subset of the accents (``new-baseline-s2-accents8``: :mod:`benchmarks.accents_subsets`,
made from ``data/accents`` before the run trains); docs/recipe.md leaves the variants out.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.accents_subsets import SUBSETS
from benchmarks.recipe_log import (
    curve,
    feature_minutes,
    log_records,
    run_cpus,
    run_heaps,
    run_paces,
    run_precisions,
    run_threads,
    run_waits,
)
from qifusion import malloc, omp

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "exp" / "recipe"
RESULTS = ROOT / "benchmarks" / "results" / "recipe"
CORPORA = {"benchmark": ROOT / "data" / "benchmark", "accents": ROOT / "data" / "accents",
           # subsets of accents (benchmarks.accents_subsets), made before their first run trains
           **{name: ROOT / "data" / name for name in SUBSETS}}
MINUTES = 60.0
DEV_EVERY = 250
EVAL_MODES = ("ctc_greedy", "attention_rescoring", "lm_rescoring")  # dev decodes of a finished run
TARGET_CER = 20.0  # issue 17: every seed at dev CER <= 20% within MINUTES
CONFIGS = {"baseline": "conf/baseline_small.yaml", "qifusion": "conf/qifusion_small.yaml"}
# every recipe before 2026-12-07: batches bucketed by the utterances' own lengths in 10 buckets (~29% padded
# frames once speed perturbation and silence padding stretch them; docs/train.md)
PADDED = ["data.bucket_augmented=false", "data.num_buckets=10"]
# c3: the committed configs before the CTC weight moved to 0.5 and the feature cache was switched on
# fp: the committed configs before 2026-12-08 02:00 UTC: float32 steps (every recipe below trained so), under
# the system's malloc (allocator() below)
FP = ["train.amp=none"]
C3 = [*FP, "model.ctc_weight=0.3", "data.feature_cache=false", *PADDED]
# lr1: the committed recipe before the peak lr moved to 2e-3 (docs/train.md "Recipe")
LR1 = [*C3, "train.lr=0.001"]
# lr2 / lr4: lr1 with twice / four times the peak learning rate: the accents hour underfits
LR2 = [*C3, "train.lr=0.002"]
LR4 = [*C3, "train.lr=0.004"]
# v3: lr1 before dropout and SpecAugment were taken out of the hour's budget (docs/train.md)
# v6: lr1 before VTLP, SpecAugment from epoch 4 and the average of the last 4 checkpoints
# v5: ... and before the sub-sampling convs were narrowed to 64 channels (docs/train.md)
V6 = [*LR1, "data.vtlp=1.0", "data.spec_aug.start_epoch=10", "train.average_last=0"]
V5 = [*V6, "model.encoder.subsampling_channels=0"]
V3 = [*V5, "model.encoder.dropout_rate=0.1", "model.encoder.positional_dropout_rate=0.1",
      "model.accent.dropout_rate=0.1", "model.decoder.dropout_rate=0.1",
      "model.decoder.positional_dropout_rate=0.1", "data.spec_aug.start_epoch=1"]
OLD = [*V3, "train.max_steps=700", "train.scheduler=cosine", "train.warmup_steps=400", "train.lr=0.002",
       "data.max_duration=100", "data.silence_pad_prob=0.5", "data.silence_pad_max=2.0",
       "data.speed_perturb=[0.9,1.0,1.1]", "model.encoder.embed_scale=false"]
CD2 = [*LR2, "train.cooldown=0.2"]
C5 = [*LR2, "model.ctc_weight=0.5"]  # c5: lr2 with CTC weight 0.5 instead of 0.3
# ba: the committed configs before the feature cache was filled before training (it filled on first use,
# inside the training steps: the same batches and weights at every step, 6331 instead of 6511 steps in the
# accents hour of baseline seed 2)
BA = ["data.feature_cache_prefill=false"]
# bf: a bf16 autocast (train.amp, oneDNN bf16 matmuls where the CPU has AVX512-BF16 or AMX; weights,
# optimizer and losses float32) under the system's malloc; bfj: the same under jemalloc, as the committed
# configs now train (their first run, bfj-baseline-s3-accents, was made before they were adopted)
BF = ["train.amp=bf16"]
C5FC = [*C5, "data.feature_cache=true", *BA]  # c5fc: c5 with the fbank computed once per (utterance, speed)
RECIPES = {"bfj": BF, "bf": BF, "new": [], "fp": FP, "pw": FP, "ba": [*FP, *BA], "lr1": LR1, "lr2": LR2,
           "lr4": LR4, "cd2": CD2, "c5": C5, "c5fc": C5FC, "v6": V6, "v5": V5, "v3": V3, "old": OLD}
# results v2's one-seed variants of the committed configs (issue 21, benchmarks/accuracy/v2.py), trained
# and checked for convergence as every run here; docs/recipe.md, a page about recipes, leaves them out
VARIANTS = {
    "oracle": ["model.accent.oracle_accent=true"],  # the baseline given the true accent as an input
    "matched": ["model.encoder.linear_units=561"],  # the baseline at Qifusion's parameter count
    "nofusion": ["model.accent.use_fusion=false"],  # LAF + AID, no fusion
    "nolaf": ["model.accent.laf_layers=[6]"],  # fusion of the last block's output only, no layer weights
    "ctcfuse": ["model.accent.fuse_into_ctc=true"],  # the fused frames feed CTC too
    "aid03": ["model.aid_weight=0.3"], "aid3": ["model.aid_weight=3.0"],
    "ctc03": ["model.ctc_weight=0.3"], "ctc07": ["model.ctc_weight=0.7"],
}
ALL_RECIPES = {**RECIPES, **VARIANTS}
# how a recipe's torch threads wait (qifusion/omp.py) where it differs from omp.wait_settings(): pw, passive
# waits with no spin, as every run trained before 2026-12-07 11:00 UTC
WAITS = {"pw": omp.wait_settings(spin_count=0)}


def allocator(recipe: str) -> dict[str, str]:
    """The variables that choose a recipe's heap allocator (``QIFUSION_MALLOC``, qifusion/malloc.py): the
    committed recipe and its :data:`VARIANTS` as ``qifusion train`` chooses by itself (``auto``: jemalloc
    under a CPU bf16 autocast); ``bfj`` under jemalloc without page decay, as its run trained (a missing
    library stops the run); every other recipe under the system's malloc, as its runs trained."""
    if recipe == "bfj":
        return {malloc.CHOICE: "jemalloc", "MALLOC_CONF": malloc.NO_DECAY_CONF}
    return {malloc.CHOICE: "auto" if recipe == "new" or recipe in VARIANTS else "system"}


def waits(recipe: str) -> dict[str, str]:
    """The OpenMP wait variables a recipe's runs train with (:data:`WAITS`, else a short spin)."""
    return WAITS.get(recipe, omp.wait_settings())


def parse(name: str) -> tuple[str, str, int]:
    """``new-baseline-s3`` (or ``new-baseline-s3-accents``) -> ("new", "baseline", 3); ValueError naming
    the run otherwise."""
    try:
        recipe, system, seed, *rest = name.split("-")
        if (recipe not in ALL_RECIPES or system not in CONFIGS or not seed.startswith("s") or len(rest) > 1
                or (rest and rest[0] not in CORPORA)):
            raise ValueError
        return recipe, system, int(seed[1:])
    except ValueError:
        raise ValueError(f"run name '{name}' is not RECIPE-SYSTEM-sSEED[-CORPUS] with RECIPE in "
                         f"{sorted(ALL_RECIPES)}, SYSTEM in {sorted(CONFIGS)} and CORPUS in "
                         f"{sorted(CORPORA)}") from None


def corpus(name: str) -> Path:
    """The corpus a run trains on: ``-CORPUS`` at the end of its name, else the ``benchmark`` preset."""
    parse(name)
    tail = name.rsplit("-", 1)[-1]
    return CORPORA.get(tail, CORPORA["benchmark"])


def corpus_fingerprint(corpus_dir: Path) -> str | None:
    """First 8 hex digits of the sha256 of the corpus's ``speakers.json`` (its voices, roles and transforms),
    so results on two versions of a preset are told apart; None for corpora without one (espeak presets)."""
    import hashlib

    from qifusion.data.synth_accents import SPEAKERS_NAME

    path = Path(corpus_dir) / SPEAKERS_NAME
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8] if path.is_file() else None


def overrides(name: str) -> list[str]:
    recipe, _, seed = parse(name)
    return [*ALL_RECIPES[recipe], f"train.seed={seed}", f"train.max_minutes={MINUTES}",
            f"train.dev_every_steps={DEV_EVERY}", "train.save_interval_steps=250", "train.keep_checkpoints=2",
            "train.log_interval=25"]


def committed_recipes(system: str) -> list[str]:
    """The recipes whose runs of ``system`` train as the committed recipe does (``new`` and any recipe that
    resolves to the same config with the same :func:`waits` and heap allocator, e.g. one adopted since;
    jemalloc with or without page decay counts as one):
    issue 17 counts their seeds together."""
    from qifusion.config import load_config

    def resolved(recipe: str) -> Any:
        return load_config(ROOT / CONFIGS[system], RECIPES[recipe])

    def heap(recipe: str) -> str:  # auto is jemalloc for a bf16 config (on the CPUs that compute bf16)
        choice = allocator(recipe)[malloc.CHOICE]
        return "jemalloc" if choice == "auto" and resolved(recipe).train.amp == "bf16" else choice
    new = resolved("new")
    return [r for r in RECIPES if resolved(r) == new and waits(r) == waits("new") and heap(r) == heap("new")]


def train(name: str, *, core: int | None = None, threads: int = 1, exp: Path | None = None,
          extra: list[str] | None = None) -> int:
    """Train (or resume) one run with ``threads`` torch threads; returns the exit code. Every start appends
    its thread count, CPU model, OpenMP waits (:func:`waits`) and the host's pace (:func:`host_pace`) to
    ``EXP/NAME/threads.json``, ``cpus.json``, ``waits.json`` and ``pace.json`` (the result JSON reports
    them). ``exp`` (default ``EXP/NAME``) and ``extra`` overrides (after the run's own): a re-training of
    the run elsewhere. Every checkpoint the run writes is hard-linked into ``EXP/NAME.archive`` as it trains
    (:func:`benchmarks.average_window.keeping`)."""
    recipe, system, _ = parse(name)
    exp = exp or EXP / name
    if (exp / "final" / "model.pt").exists():
        return 0
    data = corpus(name)
    if data.name in SUBSETS:
        from benchmarks.accents_subsets import make

        make(data.name, src=CORPORA["accents"], dst=data)
    cmd = [sys.executable, "-m", "qifusion", "train", "--config", str(ROOT / CONFIGS[system]),
           "--data", str(data), "--exp", str(exp)]
    for o in [*overrides(name), *(extra or [])]:
        cmd += ["--set", o]
    if (exp / "checkpoints.json").exists():
        cmd.append("--resume")
    if core is not None and hasattr(os, "sched_setaffinity"):
        cmd = ["taskset", "-c", str(core), *cmd]
    from benchmarks.speed.speed_common import cpu_model

    starts = [*run_threads(exp), threads]
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "threads.json").write_text(json.dumps(starts) + "\n")
    (exp / "cpus.json").write_text(json.dumps([*run_cpus(exp), cpu_model()]) + "\n")
    wait = waits(recipe)  # the recipe's, whatever the caller's shell set
    (exp / "waits.json").write_text(json.dumps([*run_waits(exp), omp.describe(wait)]) + "\n")
    env = dict(os.environ, **wait, OMP_NUM_THREADS=str(threads))
    (exp / "pace.json").write_text(json.dumps([*run_paces(exp), host_pace(threads, env)]) + "\n")
    env.update(allocator(recipe))  # after the pace: every run's pace is measured the same way
    from benchmarks.average_window import archive_of, keeping  # checkpoints kept for the averaging replay

    with open(exp.parent / f"{exp.name}.log", "a") as log, keeping(exp, archive_of(exp)):
        return subprocess.call(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


# the host's pace: benchmarks.speed.encoder's train step (12 blocks, d144, 8 x 10 s; the developers' guide
# measured WeNet's own encoder at 2.23 s on 2 threads), median of 3 after one warm-up: ~15 s at 2 threads
PACE = ["-m", "benchmarks.speed.encoder", "--size", "small", "--parts", "train", "--repeats", "3"]


def host_pace(threads: int, env: dict[str, str]) -> float | None:
    """Seconds per train step of :data:`PACE` with ``threads`` torch threads and the run's environment
    ``env``, measured just before a start: an hour's step count depends on the host's pace at the time
    (sessions run on machines of one CPU name at different paces). None, with a line on stderr, where it
    could not be measured (the run trains anyway)."""
    cmd = [sys.executable, *PACE, "--threads", str(threads)]
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=True)
        return float(json.loads(out.stdout.strip().splitlines()[-1])["train_step_s"])
    except (subprocess.SubprocessError, OSError, ValueError, KeyError, IndexError) as e:
        print(f"host pace not measured: {e}", file=sys.stderr)
        return None


def build_run_lm(model_dir: Path, corpus_dir: Path) -> Path:
    """The word 4-gram LM + lexicon of a run (``MODEL/lm``): the corpus's training text and the general
    English pool the synthesiser draws from (``qifusion lm --english``), with every dev and test sentence
    excluded. Built once; about a second."""
    from qifusion.lm.build import build_lm

    out = model_dir / "lm"
    if not (out / "lm.json").exists():
        build_lm(model_dir=model_dir, texts=[corpus_dir / "train"], out_dir=out,
                 exclude=[corpus_dir / "dev", corpus_dir / "test"], english=True)
    return out


def _finished_report(out_dir: Path, model_dir: Path) -> dict[str, Any] | None:
    """The ``report.json`` of a dev decode of this very model (newer than its ``model.pt``), else None."""
    rep = out_dir / "report.json"
    if rep.exists() and rep.stat().st_mtime > (model_dir / "model.pt").stat().st_mtime:
        return json.loads(rep.read_text())
    return None


def evaluate(name: str, *, note: str = "") -> dict[str, Any]:
    """Dev decode (``EVAL_MODES``, full context; the LM of :func:`build_run_lm`) of a finished run -> result
    JSON (a decode already made of the same model is read, not redone). The run reached the target at the
    first dev point of its curve at or under ``TARGET_CER``, else, if its final model (the average of its
    last checkpoints under ``train.average_last``) decodes at or under it greedily, at the run's end;
    for Qifusion also the streaming accent's settling (``benchmarks.accent_latency``, chunk 16). ``note``:
    how the run was made when not as the docstring says (e.g. other work beside it), shown by the report."""
    from benchmarks.speed.speed_common import cpu_model
    from qifusion.decode.options import LM_MODES
    from qifusion.decode.run import decode_dir

    recipe, system, seed = parse(name)
    dev = corpus(name) / "dev"
    exp = EXP / name
    if not (exp / "final" / "model.pt").exists():
        raise SystemExit(f"{name}: not finished (no {exp / 'final'}); run it first")
    records = log_records(exp)
    points = curve(exp, records)
    reached = next((p["train_minutes"] for p in points if p["dev_cer"] <= TARGET_CER), None)
    final = exp / "final"
    averaged = json.loads((final / "card.json").read_text()).get("averaged")
    lm = build_run_lm(final, dev.parent)
    modes = {}
    for mode in EVAL_MODES:
        out = exp / f"dev_{mode}"
        rep = _finished_report(out, final)
        if rep is None:
            rep = decode_dir(model_dir=final, data_dir=dev, out_dir=out, mode=mode, progress=False,
                             lm=lm if mode in LM_MODES else None)
        modes[mode] = {k: rep[k] for k in ("cer", "wer", "aid_accuracy", "aid_confusion")}
        modes[mode]["per_accent_cer"] = {a: v["cer"] for a, v in rep["per_accent"].items()}
    if reached is None and points and modes["ctc_greedy"]["cer"] <= TARGET_CER:
        reached = points[-1]["train_minutes"]  # the final model (an average of checkpoints) at the run's end
    accent_stream = None
    if system == "qifusion":  # how soon the streaming accent settles (chunk 16), dev
        from benchmarks.accent_latency import measure

        accent_stream = measure(exp / "final", dev, chunk=16)
    result = {"run": name, "corpus": dev.parent.name, "corpus_fingerprint": corpus_fingerprint(dev.parent),
              "recipe": recipe, "system": system, "seed": seed,
              "config": CONFIGS[system],
              "overrides": overrides(name), "threads": max(run_threads(exp)), "minutes_budget": MINUTES,
              "cpus": sorted({c or "unknown" for c in run_cpus(exp)}) or [f"{cpu_model()}, at evaluation"],
              "minutes_to_target": reached, "target_cer": TARGET_CER,
              "converged": reached is not None, "curve": points, "final_averages": averaged, "dev": modes,
              "feature_minutes": feature_minutes(records), "omp_waits": sorted(set(run_waits(exp))),
              "heap_allocators": sorted(set(run_heaps(exp))), "host_pace_s": run_paces(exp),
              "precisions": sorted(set(run_precisions(exp))),
              "accent_stream": accent_stream, **({"note": note} if note else {})}
    save_result(result)
    return result


def save_result(result: dict[str, Any]) -> Path:
    """Write ``RESULTS/RUN.json``. A result already there from another version of the corpus (another
    ``corpus_fingerprint``) is kept as ``RUN@FINGERPRINT.json`` (``RUN@none.json`` when it has none):
    a run re-made on a changed corpus adds a row instead of replacing the old corpus's one."""
    from qifusion.fileio import atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{result['run']}.json"
    if out.is_file():
        old_fp = json.loads(out.read_text()).get("corpus_fingerprint")
        if old_fp != result.get("corpus_fingerprint"):
            out.replace(RESULTS / f"{result['run']}@{old_fp or 'none'}.json")
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    return out


def record_exploration(name: str, exp: Path, *, note: str = "", step_offset: int = 0) -> Path:
    """Write ``RESULTS/explore/NAME.json``: the dev curve of a run trained by hand (``qifusion train
    --set train.dev_every_steps=N ...``) and its resolved config, for recipe comparisons by steps.
    ``step_offset``: steps of the checkpoint a ``--init`` run started from (added to its steps)."""
    import yaml

    from qifusion.fileio import atomic_write_text

    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    out = RESULTS / "explore" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    records = log_records(exp)
    epoch_ends = [{"epoch": r["epoch"], "step": r["step"], "dev_cer": r["dev_cer"]}
                  for r in records if r["kind"] == "epoch" and "dev_cer" in r]
    points = [{**p, "step": p["step"] + step_offset} for p in curve(exp, records)]
    if step_offset:  # a run started from another run's checkpoint has no epochs of its own to compare
        epoch_ends = []
    rec = {"run": name, "note": note, "step_offset": step_offset, "curve": points, "epoch_ends": epoch_ends,
           "config": cfg}
    atomic_write_text(out, json.dumps(rec, indent=1) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train runs (resumable), then evaluate them")
    r.add_argument("names", nargs="+")
    r.add_argument("--jobs", type=int, default=2, help="runs side by side, one core each")
    r.add_argument("--cores", default="", help="comma-separated cores for the workers (default 0..jobs-1; "
                   "none pinned when --jobs 1)")
    r.add_argument("--threads", type=int, default=1,
                   help="torch threads per run ('--jobs 1 --threads 2' on an idle machine: issue 17)")
    e = sub.add_parser("eval", help="evaluate finished runs on dev")
    e.add_argument("names", nargs="+")
    e.add_argument("--note", default="", help="how the runs were made, when not idle (shown by the report)")
    x = sub.add_parser("explore", help="record hand-run experiments: NAME=EXP_DIR ...")
    x.add_argument("pairs", nargs="+")
    x.add_argument("--note", default="", help="how the runs were made (threads, load)")
    x.add_argument("--step-offset", type=int, default=0,
                   help="steps of the checkpoint the runs were --init from")
    args = ap.parse_args()
    if args.cmd == "explore":
        for pair in args.pairs:
            name, _, path = pair.partition("=")
            print(record_exploration(name, ROOT / path, note=args.note, step_offset=args.step_offset))
        return
    for n in args.names:
        parse(n)
    if args.cmd == "run":
        cores = [int(c) for c in args.cores.split(",")] if args.cores else list(range(args.jobs))

        def worker(k: int) -> None:  # worker k trains names k, k+jobs, ... on its core, one after another
            for n in args.names[k::args.jobs]:
                rc = train(n, core=cores[k] if (args.jobs > 1 or args.cores) else None, threads=args.threads)
                if rc == 0:
                    evaluate(n)
                status = "done" if rc == 0 else f"failed (exit {rc}), see {EXP / n}.log"
                print(f"{n}: {status}", flush=True)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(worker, range(args.jobs)))
    else:
        for n in args.names:
            res = evaluate(n, note=args.note)
            print(f"{n}: minutes to {TARGET_CER}% dev CER: {res['minutes_to_target']}")


if __name__ == "__main__":
    main()
