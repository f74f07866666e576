"""``python -m benchmarks.recipe_report``: docs/recipe.md and docs/results/recipe_curves.png from the
result JSONs of :mod:`benchmarks.recipe` (nothing typed by hand)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.average_window import OUT as AVERAGE_RESULTS
from benchmarks.recipe import DEV_EVERY, MINUTES, RECIPES, RESULTS, ROOT, TARGET_CER, committed_recipes
from qifusion.data.synth_plan import PRESETS

DOC = ROOT / "docs" / "recipe.md"
PLOT = ROOT / "docs" / "results" / "recipe_curves.png"
EXPLORE_PLOT = ROOT / "docs" / "results" / "recipe_explore.png"
COLOURS = {  # one per (recipe, system) of benchmarks.recipe (a test checks they are all here)
    ("bfj", "baseline"): "mediumblue", ("bfj", "qifusion"): "darkorange",
    ("bf", "baseline"): "indigo", ("bf", "qifusion"): "orangered",
    ("new", "baseline"): "forestgreen", ("new", "qifusion"): "firebrick",
    ("fp", "baseline"): "darkviolet", ("fp", "qifusion"): "deeppink",
    ("pw", "baseline"): "mediumorchid", ("pw", "qifusion"): "palevioletred",
    ("ba", "baseline"): "plum", ("ba", "qifusion"): "hotpink",
    ("lr1", "baseline"): "tab:blue", ("lr1", "qifusion"): "tab:orange",
    ("lr2", "baseline"): "navy", ("lr2", "qifusion"): "darkgoldenrod",
    ("lr4", "baseline"): "teal", ("lr4", "qifusion"): "sienna",
    ("cd2", "baseline"): "black", ("cd2", "qifusion"): "crimson",
    ("c5", "baseline"): "darkcyan", ("c5", "qifusion"): "goldenrod",
    ("c5fc", "baseline"): "slategray", ("c5fc", "qifusion"): "olivedrab",
    ("v6", "baseline"): "tab:green", ("v6", "qifusion"): "tab:pink",
    ("v5", "baseline"): "tab:purple", ("v5", "qifusion"): "tab:red",
    ("v3", "baseline"): "tab:cyan", ("v3", "qifusion"): "tab:olive",
    ("old", "baseline"): "tab:gray", ("old", "qifusion"): "tab:brown"}


def load_results() -> list[dict[str, Any]]:
    """Every recipe run's result JSON, ordered by recipe, system, seed (results v2's variants of the
    committed configs, ``benchmarks.recipe.VARIANTS``, are reported by docs/RESULTS_v2.md instead)."""
    runs = [{**json.loads(p.read_text()), "label": p.stem} for p in sorted(RESULTS.glob("*.json"))]
    runs = [r for r in runs if r["recipe"] in RECIPES]
    order = list(RECIPES)  # newest first
    # a result kept from an older corpus version (RUN@FP.json, recipe.save_result) after the current one
    return sorted(runs, key=lambda r: (order.index(r["recipe"]), r["system"], r["seed"], "@" in r["label"]))


def _cpus(r: dict[str, Any]) -> str:
    """`` (AMD EPYC; pace 2.41 s; bf16 autocast)``: the CPU model(s) a run trained on, the host's pace
    before each start (:func:`benchmarks.recipe.host_pace`) and the training precision, where recorded;
    empty otherwise."""
    facts = [", ".join(r["cpus"])] if r.get("cpus") else []
    paces = r.get("host_pace_s") or []
    if paces:
        facts.append("pace " + ", ".join("-" if p is None else f"{p:.2f}" for p in paces) + " s")
    facts += r.get("precisions") or []  # logged from 2026-12-08: "bf16 autocast" or "float32"
    return f" ({'; '.join(facts)})" if facts else ""


def _name(r: dict[str, Any]) -> str:
    """The run's name in the tables: ``RUN``, or ``RUN@FP`` for a result kept from an older corpus."""
    return r.get("label", r["run"])


def _figure() -> tuple[Any, Any]:
    """A headless (fig, ax) of the report's size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(8, 4.5))


def _save(fig: Any, ax: Any, out: Path, *, title: str, legend_size: int) -> None:
    """Title, legend and grid on ``ax``; write ``fig`` to ``out`` and close it."""
    import matplotlib.pyplot as plt

    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=legend_size)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot(runs: list[dict[str, Any]], out: Path) -> None:
    fig, ax = _figure()
    seen = set()
    for r in runs:
        recipe, system, preset = r["recipe"], r["system"], _preset(r)
        xs = [p["train_minutes"] for p in r["curve"]]
        ys = [p["dev_cer"] for p in r["curve"]]
        label = f"{recipe} recipe, {system}, {preset}"
        ax.plot(xs, ys, marker=".", color=COLOURS[(recipe, system)], alpha=0.8,
                ls="-" if preset == "benchmark" else "--", label=None if label in seen else label)
        seen.add(label)
    ax.axhline(TARGET_CER, color="k", lw=0.8, ls="--", label=f"target {TARGET_CER:.0f}%")
    ax.set_xlabel("training minutes (threads: see the run table; dev passes excluded)")
    ax.set_ylabel("dev CER % (CTC greedy)")
    ax.set_ylim(0, 100)
    ax.set_xlim(0, MINUTES * 1.05)
    _save(fig, ax, out, title="Dev CER against training time (solid: benchmark preset, dashed: accents)",
          legend_size=8)


def plot_explorations(runs: list[dict[str, Any]], out: Path) -> None:
    """Dev CER (and AID accuracy, dashed) of the exploratory runs against optimizer steps."""
    fig, ax = _figure()
    ax2 = ax.twinx()
    for i, r in enumerate(runs):
        colour = f"C{i}"
        steps = [p["step"] for p in r["curve"]]
        ax.plot(steps, [p["dev_cer"] for p in r["curve"]], marker="o", color=colour, label=r["run"])
        aid = [(p["step"], 100 * p["dev_aid_acc"]) for p in r["curve"] if "dev_aid_acc" in p]
        if aid:
            ax2.plot(*zip(*aid), ls="--", marker=".", color=colour, alpha=0.7)
    ax.axhline(TARGET_CER, color="k", lw=0.8, ls=":")
    ax.set_xlabel("optimizer step (50 s batches)")
    ax.set_ylabel("dev CER % (CTC greedy), solid")
    ax2.set_ylabel("dev accent-ID accuracy %, dashed")
    ax.set_ylim(0, 100)
    ax2.set_ylim(0, 100)
    _save(fig, ax, out, title="Exploratory runs, seed 2 (the old recipe's plateau seed)", legend_size=7)


def _preset(r: dict[str, Any]) -> str:
    """A result's corpus preset (results written before the key existed are ``benchmark`` runs)."""
    return r.get("corpus", "benchmark")


def _corpus(r: dict[str, Any]) -> str:
    """The preset and, where recorded, the fingerprint of its speakers table: ``accents@1a2b3c4d``."""
    fp = r.get("corpus_fingerprint")
    return f"{_preset(r)}@{fp}" if fp else _preset(r)


def _averaged(r: dict[str, Any]) -> str:
    """`` (avg of N)`` when a run's final model is an average of its last N checkpoints."""
    n = len(r.get("final_averages") or [])
    return f" (avg of {n})" if n else ""


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def _fbank(r: dict[str, Any]) -> str:
    minutes = r.get("feature_minutes")
    return "" if minutes is None else f" (+ {minutes:.1f} min of fbank before training)"


def render(runs: list[dict[str, Any]]) -> str:
    lines = ["# Training recipe: does every seed converge within an hour?", "",
             "Generated by `python -m benchmarks.recipe_report` from `benchmarks/results/recipe/*.json`",
             "(runs: `python -m benchmarks.recipe run NAME...`, see the module docstring). Every run trains",
             "on the `benchmark` preset (or, with an `-accents` suffix, the `accents` preset of "
             f"docs/synth.md) with the torch threads of the table for at most {MINUTES:.0f} minutes of "
             f"training time; dev CER (CTC greedy, full context) every {DEV_EVERY} steps. Dev only: no test"
             " utterance is read. The issue's target is for two threads on an idle machine; one-thread "
             "runs had one core while other work used the other core. LM rescoring: `lm_rescoring` with a "
             "word 4-gram of the corpus's training text and the general-English pool the synthesiser draws"
             " from, every dev and test sentence excluded (`benchmarks.recipe.build_run_lm`), default LM "
             "weights. The final model is the last weights, or, under `train.average_last: N`, the "
             "average of the last N checkpoints; the decodes after the curve are of the final model. "
             "The CPU model where a run recorded it (runs from 2026-12-07 on) follows its thread count: "
             "the sessions of this project run on machines of different models, at different paces. "
             "`pace`: seconds per train step of `python -m benchmarks.speed.encoder --size small --parts "
             "train` (12 blocks, 8 x 10 s; WeNet's own encoder took 2.23 s on the developers' machine) at "
             "the run's threads, measured just before each start (runs from 2026-12-07 17:00 UTC on): a "
             "slower host gives an hour fewer steps. "
             "`accents@xxxxxxxx`: the fingerprint of the corpus's speakers table (`benchmarks.recipe."
             "corpus_fingerprint`); `accents` runs without one trained on the corpus before festival `kal` "
             "joined the train voices of `us` (docs/synth.md). Runs with `data.feature_cache_prefill` "
             "computed their training fbank (every utterance at every speed factor) before the training "
             "clock started, on both cores; the steps column gives those minutes, outside the budget as "
             "feature extraction is in WeNet's and icefall's recipes.", ""]
    if not runs:
        pending = "No timed run has finished yet: the 60-minute check is still to be made."
        return "\n".join([*lines, pending, ""])
    lines += ["| run | corpus | recipe | system | seed | threads | minutes to dev CER <= 20% | "
              "last dev CER (greedy) | final model: dev CER, greedy | dev CER / WER, attention rescoring | "
              "dev CER / WER, LM rescoring | dev AID accuracy | steps |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        last = r["curve"][-1] if r["curve"] else {}
        resc = r["dev"]["attention_rescoring"]
        lm = r["dev"].get("lm_rescoring")
        aid = resc.get("aid_accuracy")
        lines.append(f"| {_name(r)} | {_corpus(r)} | {r['recipe']} | {r['system']} | "
                     f"{r['seed']} | {r.get('threads', 1)}{_cpus(r)} | "
                     f"{_fmt(r['minutes_to_target'])} | {_fmt(last.get('dev_cer'))} | "
                     f"{_fmt(r['dev'].get('ctc_greedy', {}).get('cer'), '.2f')}{_averaged(r)} | "
                     f"{_fmt(resc['cer'], '.2f')} / {_fmt(resc.get('wer'), '.2f')} | "
                     f"{'-' if lm is None else _fmt(lm['cer'], '.2f') + ' / ' + _fmt(lm['wer'], '.2f')} | "
                     f"{_pct(aid)} | {last.get('step', '-')}{_fbank(r)} |")
    lines += ["", *(f"- {_name(r)}: {r['note']}" for r in runs if r.get("note"))]
    committed = {system: committed_recipes(system) for system in ("baseline", "qifusion")}
    for corpus in sorted({_corpus(r) for r in runs}):
        for recipe, system in [(rc, sy) for rc in RECIPES for sy in ("baseline", "qifusion")]:
            group = [r for r in runs if (r["recipe"], r["system"], _corpus(r)) == (recipe, system, corpus)]
            if group:
                ok = sum(r["converged"] for r in group)
                lines.append(f"\n{corpus} corpus, {recipe} recipe, {system}: {ok} of {len(group)} seeds "
                             f"reached dev CER <= {TARGET_CER:.0f}% within {MINUTES:.0f} minutes.")
        for system, same in committed.items():
            group = [r for r in runs if r["recipe"] in same and (r["system"], _corpus(r)) == (system, corpus)]
            if group:
                ok = sum(r["converged"] for r in group)
                seeds = ", ".join(str(s) for s in sorted(r["seed"] for r in group))
                names = ", ".join(same)
                lines.append(f"\n**{corpus} corpus, the committed {system} config** (recipes {names}): "
                             f"{ok} of {len(group)} seeds reached dev CER <= {TARGET_CER:.0f}% within "
                             f"{MINUTES:.0f} minutes (seeds {seeds}).")
    lines += ["", "Dev CER per accent (attention rescoring, full context); worst accent / best accent, and "
              "worst accent / the majority accent of training (issue 16's \"accents hurt\": >= 1.5):", "",
              "| run | per accent | worst / best | worst / majority |", "|---|---|---|---|"]
    for r in runs:
        per = r["dev"]["attention_rescoring"].get("per_accent_cer") or {}
        if per:
            cells = ", ".join(f"{a} {c:.1f}" for a, c in sorted(per.items(), key=lambda kv: kv[1]))
            preset = PRESETS.get(_preset(r))
            major = per.get(preset.majority or "") if preset else None
            vs_major = f"{max(per.values()) / major:.2f}" if major else "-"
            spread = max(per.values()) / min(per.values())
            lines.append(f"| {_name(r)} | {cells} | {spread:.2f} | {vs_major} |")
    lines += ["", f"![dev CER against training minutes](results/{PLOT.name})", ""]
    streams = [r for r in runs if (r.get("accent_stream") or {}).get("utterances")]
    if streams:
        lines += ["### Streaming accent on dev (chunk 16, `benchmarks.accent_latency`)", "",
                  "Running accent = the pooled accent posterior of the frames seen so far, read after every "
                  "chunk; settled = never changes again.", "",
                  "| run | AID after 1 s | after 2 s | after 3 s | at the end | settled within 2 s | "
                  "median settling (s) |", "|---|---|---|---|---|---|---|"]
        for r in streams:
            a = r["accent_stream"]
            at = a["accuracy_at"]
            cells = [at["1.0"], at["2.0"], at["3.0"], a["accuracy_final"], a["settled_within_2s"]]
            lines.append(f"| {_name(r)} | {' | '.join(map(_pct, cells))} | {a['settle_s_median']:.2f} |")
        lines.append("")
    for r in runs:
        conf = r["dev"]["attention_rescoring"].get("aid_confusion")
        if r["system"] == "qifusion" and conf:
            labels = conf["labels"]
            lines += [f"### AID confusion on dev, {_name(r)} (rows: reference, columns: predicted)", "",
                      "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
            lines += [f"| {a} | " + " | ".join(str(v) for v in row) + " |"
                      for a, row in zip(labels, conf["matrix"])]
            lines.append("")
    return "\n".join(lines)


def load_explorations() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((RESULTS / "explore").glob("*.json"))]


def _differences(cfg: dict[str, Any]) -> str:
    """The keys of a run's resolved config that the committed recipe would set otherwise."""
    from qifusion.config import from_dict, load_config, to_dict

    cfg = to_dict(from_dict(cfg))  # keys the run's config lacks take today's defaults (what it ran with)
    system = "qifusion" if cfg["model"]["accent"]["use_aid"] else "baseline"
    ref = to_dict(load_config(ROOT / f"conf/{system}_small.yaml"))
    out = []
    for section in ("model", "data"):
        committed = _flatten(ref[section])
        out += [f"{section}.{k}={v}" for k, v in _flatten(cfg[section]).items() if committed.get(k) != v]
    return ", ".join(out) or "as committed"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[prefix + k] = v
    return flat


def render_explorations(runs: list[dict[str, Any]]) -> list[str]:
    """Dev CER (and AID) by step of the hand-run experiments: comparisons by steps, not minutes."""
    if not runs:
        return []
    steps = sorted({p["step"] for r in runs for p in r["curve"]})
    lines = ["## Exploratory runs (compare by steps)", "",
             "Recorded with `python -m benchmarks.recipe explore NAME=EXP`. These ran with one thread on a "
             "core shared with another run (and other work), so their minutes are not the recipe's speed; "
             "compare them by optimizer steps. Each cell: dev CER % (CTC greedy) [dev AID accuracy].", "",
             "| run | differs from the committed `*_small` config | " + " | ".join(f"step {s}" for s in steps)
             + " |", "|---|---|" + "---|" * len(steps)]
    for r in runs:
        by_step = {p["step"]: p for p in r["curve"]}
        cells = []
        for s in steps:
            p = by_step.get(s)
            if p is None:
                cells.append("-")
                continue
            aid = p.get("dev_aid_acc")
            cells.append(f"{p['dev_cer']:.1f}" + ("" if aid is None else f" [{100 * aid:.1f}%]"))
        lines.append(f"| {r['run']} | {_differences(r['config'])} | " + " | ".join(cells) + " |")
    notes = sorted({r["note"] for r in runs if r["note"]})
    image = f"![exploratory runs](results/{EXPLORE_PLOT.name})"
    return [*lines, "", *(f"- {n}" for n in notes), "", image, ""]


def render_old_study(new_runs: list[dict[str, Any]]) -> list[str]:
    """Dev CER after each epoch (same audio seen) of the first accuracy study's main runs (old recipe: 100 s
    batches, cosine to ~0 at 700 steps) beside the exploratory runs' epoch ends."""
    study = ROOT / "benchmarks" / "results" / "accuracy"
    old = [json.loads(p.read_text()) for p in sorted(study.glob("*_s[0-9].json"))]
    old = [r for r in old if r.get("group") == "main"]
    if not old:
        return []
    lines = ["## Against the old recipe, by epochs of audio", "",
             "Dev CER % (CTC greedy) at the end of each epoch (5.14 h of audio each). Old recipe: the first "
             "accuracy study's main runs (`benchmarks/results/accuracy/`; 100 s batches, 400 warm-up steps "
             "to "
             "lr 2e-3, cosine to ~0 at step 700). New recipe: the exploratory runs above (50 s batches).", "",
             "| run | recipe | epoch 1 | epoch 2 | epoch 3 |", "|---|---|---|---|---|"]
    for r in old:
        cells = [f"{e['dev_cer']:.1f}" for e in r["train"]["epochs"]][:3]
        lines.append(f"| {r['run']} | old | " + " | ".join(cells + ["-"] * (3 - len(cells))) + " |")
    for r in (r for r in new_runs if "accents" not in r["run"]):  # same corpus as the old study only
        ends = r.get("epoch_ends", [])[:3]
        if ends:
            cells = [f"{p['dev_cer']:.1f}" for p in ends]
            lines.append(f"| {r['run']} | new | " + " | ".join(cells + ["-"] * (3 - len(cells))) + " |")
    return [*lines, ""]


def render_aid_sources() -> list[str]:
    """The ``benchmarks.aid_sources`` results: does the AID head (and a probe of each block) name the
    accent of dev speakers whose source voice was never heard in training?"""
    found = [json.loads(p.read_text()) for p in sorted((RESULTS.parent / "aid_sources").glob("*.json"))]
    if not found:
        return []
    lines = ["## Accent or voice? (`python -m benchmarks.aid_sources`)", "",
             "Dev accent-ID accuracy on speakers derived from a training voice (seen source) and on speakers "
             "whose source voice is not in training (unseen source). Head: the model's AID decision "
             "(attention-rescoring decode). Probe: a logistic regression on one pooled statistic, fitted on "
             "training utterances; the best probe is named.", "",
             "| run | head, seen source | head, unseen source | best probe | probe, unseen source | "
             "fbank mean+std probe, unseen source |", "|---|---|---|---|---|---|"]
    for r in found:
        feats = r["probe"]["features"]
        best = max((k for k in feats if feats[k]["unseen_source"] is not None),
                   key=lambda k: feats[k]["unseen_source"], default=None)
        fb = feats.get("fbank_meanstd", {}).get("unseen_source")
        h = r["head"]
        lines.append(f"| {r['run']} | {_pct(h['seen_source']['accuracy'])} | "
                     f"{_pct(h['unseen_source']['accuracy'])} | {best or '-'} | "
                     f"{_pct(feats[best]['unseen_source']) if best else '-'} | {_pct(fb)} |")
    for r in found:
        wrong = {s: v["predicted"] for s, v in r["head"]["per_speaker"].items() if v["unseen_source"]}
        if wrong:
            lines += ["", f"What {r['run']}'s head called each unseen-source dev speaker:", ""]
            lines += [f"- {s}: " + ", ".join(f"{a} {n}" for a, n in p.items()) for s, p in wrong.items()]
    return [*lines, ""]


def render_average_windows() -> list[str]:
    """The ``benchmarks.average_window`` results: a finished run's dev CER under each (keep, average) rule
    of the final model, replayed on every checkpoint the run wrote."""
    found = [json.loads(p.read_text()) for p in sorted(AVERAGE_RESULTS.glob("*.json"))]
    if not found:
        return []
    by_rule = [{(x["keep_checkpoints"], x["average_last"]): x for x in r["rules"]} for r in found]
    rules = list(dict.fromkeys(rule for rows in by_rule for rule in rows))  # in the order the runs list them
    lines = ["## Which average ends a run? (`python -m benchmarks.average_window`)", "",
             "Dev CER (CTC greedy) of a finished run's final model had the run kept the newest "
             "`train.keep_checkpoints` step and epoch checkpoints (0: all) and ended on the average of the "
             "newest `train.average_last` of them, replayed on every checkpoint it wrote (hard-linked while "
             "it trained); in brackets the first and last step averaged. The committed rule is 2 and 4, "
             "(2, 1) is the last step alone. Dev only: a rule picked here is judged on other seeds.", "",
             "| keep_checkpoints | average_last | " + " | ".join(r["run"] for r in found) + " |",
             "|---|---|" + "---|" * len(found)]
    for keep, num in rules:
        cells = [f"{x['dev_cer']:.2f} ({x['steps'][0]}-{x['steps'][1]})" if x else "-"
                 for x in (rows.get((keep, num)) for rows in by_rule)]
        lines.append(f"| {keep} | {num} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def write_report() -> Path:
    """Write docs/recipe.md (and the plot when there are runs); returns the page's path."""
    from qifusion.fileio import atomic_write_text

    runs = load_results()
    if runs:
        plot(runs, PLOT)
    explorations = load_explorations()
    if explorations:
        plot_explorations(explorations, EXPLORE_PLOT)
    atomic_write_text(DOC, "\n".join([render(runs), *render_aid_sources(), *render_average_windows(),
                                      *render_explorations(explorations),
                                      *render_old_study(explorations)]))
    return DOC


if __name__ == "__main__":
    print(write_report())
