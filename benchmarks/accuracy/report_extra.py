"""Report sections beyond the main comparison: AID, LAF/probe, ablations, sweeps, unseen accent, training."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.accuracy.report_converge import converged_label, where_label
from benchmarks.accuracy.report_doc import (
    CHUNKS,
    DASH,
    GREEDY,
    RESC,
    Doc,
    Study,
    f2,
    mode_key,
    mode_label,
    pct,
    red,
)
from benchmarks.accuracy.report_main import NOT_CONVERGED_CER, converged, mean_aid
from benchmarks.accuracy.report_plots import Panel, plot_confusion, plot_grouped_bars, plot_panels
from benchmarks.accuracy.report_stats import aid_accuracy, compare, confusion, rel_change, run_cer, seed_stats
from benchmarks.accuracy.spec import BY_NAME, HELD_OUT_ACCENT, RUNS
from qifusion.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DEV = ("full", "16")  # the chunk sizes decoded on dev
WHAT = {
    "baseline_s0": "Conformer baseline (accent parts off)",
    "qifusion_s0": "Qifusion: LAF + AID + cross-attention fusion",
    "oracle_s0": "baseline + embedding of the true accent label (upper bound of accent knowledge)",
    "laf_aid_nofusion_s0": "LAF + AID as an auxiliary loss, no fusion",
    "fusion_nolaf_s0": "fusion with the accent embedding of the last block only (no LAF)",
    "qifusion_ctcfuse_s0": "Qifusion with the fused features also feeding the CTC head",
    "baseline_matched_s0": "baseline widened to Qifusion's parameter count",
}


def section_aid(doc: Doc, study: Study) -> None:
    doc.h(2, "Accent identification")
    doc.p("Utterance-level AID accuracy on test (mean frame posterior; while streaming, the running",
          "estimate at the end of the utterance) per decoding chunk, from the per-utterance predictions.")
    qif = study.system("qifusion")
    runs = [*qif, *(r for r in study.group("ablation")
                    if aid_accuracy(r, "test", mode_key(RESC, "full")) is not None)]
    rows = [[r["run"], *(pct(aid_accuracy(r, "test", mode_key(RESC, c))) for c in CHUNKS)] for r in runs]
    if len(qif) > 1:
        rows.insert(len(qif), ["**qifusion mean**", *(pct(mean_aid(qif, "test", mode_key(RESC, c)))
                                                      for c in CHUNKS)])
    doc.table(["run", *CHUNKS], rows)
    if not qif or aid_accuracy(qif[0], "test", mode_key(RESC, "full")) is None:
        return
    labels, matrix = confusion(qif, "test", mode_key(RESC, "full"))
    doc.h(3, f"Confusion, Qifusion, full context, summed over {len(qif)} seed(s) (rows: reference)")
    doc.table(["", *labels], [[f"**{a}**", *map(str, row)] for a, row in zip(labels, matrix)])
    acc = mean_aid(qif, "test", mode_key(RESC, "full"))
    test = qif[0]["sets"]["test"]
    refs = test["utts"]["accent"]
    chance = max(refs.count(a) for a in set(refs)) / len(refs)
    predicted = {p for r in qif for p in r["sets"]["test"]["modes"][mode_key(RESC, "full")]["pred_accent"]}
    if acc is not None and acc <= chance + 0.02:
        doc.p(f"The AID is at chance level ({pct(chance)}, the share of the largest test accent; it predicts",
              f"{len(predicted)} distinct accent(s)), so no CER difference in this study can come from",
              "identifying the accent; the ablations (parameter-matched baseline, LAF + AID without fusion,",
              "oracle) say where it comes from.")
    doc.image("aid_confusion.png", "AID confusion matrix",
              plot_confusion, labels, matrix, title=f"Qifusion AID, test, full context ({pct(acc)})")
    section_aid_fit(doc, study)


def section_aid_fit(doc: Doc, study: Study) -> None:
    """Training-set fit of the AID head (``aid_fit.py``): over- or under-fitting, prior or no signal."""
    fits = [study.aid_fit[r.name] for r in RUNS if r.name in study.aid_fit]
    if not fits:
        return
    per = fits[0]["per_accent"]
    doc.h(3, "Does the AID head fit its training data?")
    n_acc = len(fits[0]["train_prior"])
    doc.p(f"`python -m benchmarks.accuracy.aid_fit NAME`: {per} utterances per accent from train and from",
          "dev (fixed seed). *mean post.* is the model's rule (argmax of the mean frame posterior);",
          "*prior-corr.* divides the training prior out of every frame first. Chance is",
          f"{pct(1 / n_acc)} ({n_acc} accents, balanced samples). The last column is a model-free",
          "reference: a linear probe on each utterance's fbank mean and std, fitted on the train sample and",
          "scored on the dev sample.")
    rows = [[f["run"], pct(f["train"]["acc_mean_posterior"]), pct(f["train"]["acc_prior_corrected"]),
             pct(f["dev"]["acc_mean_posterior"]), pct(f["dev"]["acc_prior_corrected"]),
             pct(f["fbank_stats_probe_train_to_dev"])] for f in fits]
    doc.table(["run", "train, mean post.", "train, prior-corr.", "dev, mean post.", "dev, prior-corr.",
               "fbank-stats probe"], rows)
    frozen = [f for f in fits if "frozen_head" in f]
    if frozen:
        fh = frozen[0]["frozen_head"]
        doc.p(f"`aid_fit.py NAME --frozen-head {fh['n_train'] // n_acc}`: a small utterance-level head",
              "(frame MLP, mean + std pooling, linear) trained on the frozen encoder's block outputs (all",
              "blocks concatenated) and, as the reference, on fbank frames;",
              f"{fh['n_train']} train and {fh['n_dev']} dev utterances, balanced, {fh['epochs']} epochs",
              "(accuracy after the last).")
        doc.table(["run", "encoder head, train", "encoder head, dev", "fbank head, train", "fbank head, dev"],
                  [[f["run"], *(pct(f["frozen_head"][k][s]) for k in ("encoder", "fbank")
                                for s in ("final_train", "final_dev"))] for f in frozen])
    under = [f["run"] for f in fits if f["train"]["acc_prior_corrected"] < 0.5]
    if under:
        doc.p(f"{', '.join(under)}: below 50% even on training utterances with the prior divided out, so the",
              "head under-fits (it has not learnt accent, it is not overfitting the training voices), and",
              "more training or a stronger accent signal, not regularisation, is what it lacks.")


def section_layers(doc: Doc, study: Study) -> None:
    doc.h(2, "Which layers carry accent")
    laf = [r for r in study.runs.values() if r.get("laf")]
    laf.sort(key=lambda r: list(BY_NAME).index(r["run"]) if r["run"] in BY_NAME else len(BY_NAME))
    doc.h(3, "Learned LAF layer weights (softmax over the fused blocks; plot without the sweep runs)")
    if laf:
        layers = laf[0]["laf"]["layers"]
        same = [r for r in laf if r["laf"]["layers"] == layers]
        doc.table(["run", *(f"block {b}" for b in layers)],
                  [[r["run"], *(f"{w:.3f}" for w in r["laf"]["weights"])] for r in same])
        others = [r for r in laf if r["laf"]["layers"] != layers]
        if others:
            doc.bullets([f"{r['run']}: blocks {r['laf']['layers']} weights "
                         + ", ".join(f"{w:.3f}" for w in r["laf"]["weights"]) for r in others])
        series = {r["run"]: r["laf"]["weights"] for r in same if r["group"] != "sweep"} or {
            r["run"]: r["laf"]["weights"] for r in same}  # the sweeps stay in the table only
        doc.image("laf_weights.png", "LAF layer weights",
                  plot_grouped_bars, [str(b) for b in layers], series, xlabel="encoder block",
                  ylabel="weight", title="LAF layer weights")
    else:
        doc.p("_(pending: no run with LAF finished)_")
    doc.h(3, "Linear accent probe per encoder block")
    doc.p("Logistic regression on each block's mean-pooled output, fitted on dev speakers, accuracy on test",
          "speakers (benchmarks/accuracy/probe.py): how much accent each block carries, for any model.")
    probed = [r for r in study.runs.values() if r.get("block_probe")]
    probed.sort(key=lambda r: list(BY_NAME).index(r["run"]) if r["run"] in BY_NAME else len(BY_NAME))
    if not probed:
        doc.p("_(pending)_")
        return
    blocks = probed[0]["block_probe"]["blocks"]
    doc.table(["run", *map(str, blocks)],
              [[r["run"], *(f"{a:.2f}" for a in r["block_probe"]["acc"])] for r in probed])
    series = {r["run"]: (r["block_probe"]["blocks"], [100 * a for a in r["block_probe"]["acc"]])
              for r in probed}
    panel = Panel("Accent probe accuracy (test speakers)", "encoder block", "accuracy (%)", series)
    doc.image("block_probe.png", "accent probe accuracy per block", plot_panels, [panel], width=6.5,
              height=4.0)


def _cell(run: dict[str, Any], key: str, ref: float | None, which: str = "all") -> str:
    cer = run_cer(run, "test", key, which)
    ch = rel_change(cer, ref)
    return f2(cer) if ch is None else f"{f2(cer)} ({pct(ch, sign=True)})"


def section_ablations(doc: Doc, study: Study) -> None:
    doc.h(2, "Ablations (seed 0)")
    doc.p("Test CER (%) with the relative change vs baseline_s0 in parentheses (negative = better); the last",
          "column is the bootstrap reduction over baseline_s0 at rescoring full context.")
    names = ["baseline_s0", "qifusion_s0", *(r["run"] for r in study.group("ablation"))]
    runs = [study.runs[n] for n in names if n in study.runs]
    base = study.get("baseline_s0")
    modes = [(RESC, "full"), (RESC, "16"), (GREEDY, "full"), (GREEDY, "16")]
    rows = []
    for r in runs:
        refs = [run_cer(base, "test", mode_key(m, c)) if base else None for m, c in modes]
        min_ref = run_cer(base, "test", mode_key(RESC, "full"), "minority") if base else None
        vs = compare([base], [r], "test", mode_key(RESC, "full")) if base and r is not base else None
        rows.append([r["run"], WHAT.get(r["run"], ""), f"{r.get('num_params', 0) / 1e6:.2f}M",
                     *(_cell(r, mode_key(m, c), ref) for (m, c), ref in zip(modes, refs)),
                     _cell(r, mode_key(RESC, "full"), min_ref, "minority"),
                     pct(aid_accuracy(r, "test", mode_key(RESC, "full"))), red(vs), converged_label(r),
                     where_label(r)])
    doc.table(["run", "what", "params", *(mode_label(m, c) for m, c in modes), "minority resc. full", "AID",
               "reduction vs baseline_s0", "converged", "trained on"], rows, left=2)
    spans = []
    for system in ("baseline", "qifusion"):
        cers = [run_cer(r, "test", mode_key(RESC, "full")) for r in study.system(system) if converged(r)]
        cers = [c for c in cers if c is not None]
        if len(cers) > 1:
            spans.append(f"{system} {f2(min(cers))}-{f2(max(cers))} ({len(cers)} seeds)")
    if spans:
        doc.p("For scale, the converged seeds of the main systems span", " and ".join(spans), "(resc. full",
              "test CER): a one-seed difference inside that spread is not evidence about a design.")
    failed = [r["run"] for r in runs if converged(r) is False]
    if failed:
        doc.p(f"**Not converged** (dev CER >= {NOT_CONVERGED_CER:.0f}%): {', '.join(failed)}. With one",
              "seed, a not-converged ablation says little about its design: at this budget seeds of the",
              "full systems fail too (see Convergence at this budget).")
    oracle = study.get("oracle_s0")
    doc.p("The oracle is the baseline given each utterance's true accent label as an input (also while",
          "streaming, from the first chunk): the most any accent-aware model could gain from accent",
          "knowledge on this corpus. If the oracle does not beat the baseline, accent information is not",
          "what limits accuracy here and no accent-aware model should be expected to win.")
    if oracle is not None and base is not None:
        parts = []
        for m, c in ((RESC, "full"), (RESC, "16"), (RESC, "4")):
            for which in ("all", "minority"):
                r = compare([base], [oracle], "test", mode_key(m, c), which)
                parts.append(f"{mode_label(m, c)} {which}: {red(r)}")
        doc.p("Oracle's relative reduction over baseline_s0 [95% CI]:", "; ".join(parts) + ".")


def _weights(run: dict[str, Any]) -> tuple[float, float]:
    spec = BY_NAME.get(run["run"])  # the spec's overrides: its result may predate a change of the configs
    cfg = load_config(ROOT / run["config"], spec.all_overrides() if spec else list(run.get("overrides", [])))
    return float(cfg.model.aid_weight), float(cfg.model.ctc_weight)


def section_sweeps(doc: Doc, study: Study) -> None:
    doc.h(2, "Loss-weight sensitivity (dev set)")
    doc.p("Qifusion seed 0 with one loss weight changed; measured on the DEV split (never test), attention",
          "rescoring. qifusion_s0 is the centre point (weights from its config). One seed per point: a",
          "point that did not converge may be an unlucky seed rather than a bad weight (see Convergence at",
          "this budget).")
    centre = study.get("qifusion_s0")
    panels = []
    for key, idx, label in (("model.aid_weight", 0, "w_aid"), ("model.ctc_weight", 1, "w_ctc")):
        names = [n for n, r in BY_NAME.items() if r.group == "sweep" and any(o.startswith(key + "=")
                                                                             for o in r.overrides)]
        runs = [study.runs[n] for n in names if n in study.runs] + ([centre] if centre else [])
        runs.sort(key=lambda r: _weights(r)[idx])
        doc.h(3, f"{label} sweep")
        rows = [[f"{_weights(r)[idx]:g}", r["run"], *(f2(run_cer(r, "dev", mode_key(RESC, c))) for c in DEV),
                 *(pct(aid_accuracy(r, "dev", mode_key(RESC, c))) for c in DEV), converged_label(r),
                 where_label(r)] for r in runs]
        doc.table([label, "run", "dev CER full", "dev CER 16", "dev AID full", "dev AID 16", "converged",
                   "trained on"], rows, left=2)
        if len(runs) > 1:
            xs = [_weights(r)[idx] for r in runs]
            cer = {f"CER {c}": (xs, [run_cer(r, "dev", mode_key(RESC, c)) or 0.0 for r in runs]) for c in DEV}
            panels.append(Panel(f"dev CER vs {label}", label, "CER (%)", cer, xlog=True))
            if idx == 0:
                aid = {f"AID {c}": (xs, [100 * (aid_accuracy(r, "dev", mode_key(RESC, c)) or 0.0)
                                         for r in runs]) for c in DEV}
                panels.append(Panel(f"dev AID vs {label}", label, "accuracy (%)", aid, xlog=True))
    if panels:
        doc.image("sweeps.png", "loss-weight sweeps", plot_panels, panels, width=4.2)


def section_unseen(doc: Doc, study: Study) -> None:
    held = HELD_OUT_ACCENT
    doc.h(2, f"Unseen accent ({held})")
    doc.p(f"unseen_* runs are trained without {held} (train and dev); their test CER on the {held}",
          "utterances shows whether accent modelling helps on an accent it has never heard. The seed-0",
          "main runs (trained with it) are shown for reference.")
    names = ["unseen_baseline_s0", "unseen_qifusion_s0", "baseline_s0", "qifusion_s0"]
    runs = [study.runs[n] for n in names if n in study.runs]
    modes = [(RESC, "full"), (RESC, "16"), (GREEDY, "full"), (GREEDY, "16")]
    rows = [[r["run"], *(f2(run_cer(r, "test", mode_key(m, c), held)) for m, c in modes),
             f2(run_cer(r, "test", mode_key(RESC, "full"), f"seen:{held}")), converged_label(r),
             where_label(r)] for r in runs]
    doc.table(["run", *(f"{held} {mode_label(m, c)}" for m, c in modes), "other accents resc. full",
               "converged", "trained on"], rows)
    ub, uq = study.get("unseen_baseline_s0"), study.get("unseen_qifusion_s0")
    failed = [r["run"] for r in (ub, uq) if r is not None and converged(r) is False]
    if failed:
        doc.p(f"**Not converged** (dev CER >= {NOT_CONVERGED_CER:.0f}%): {', '.join(failed)}. A comparison",
              "involving a run that has not learnt to recognise says nothing about accent modelling on",
              "an unseen accent (see Convergence at this budget).")
    if ub is None or uq is None:
        doc.p("_(pending: unseen_baseline_s0 and unseen_qifusion_s0)_")
    else:
        parts = [f"{mode_label(RESC, c)}: {red(compare([ub], [uq], 'test', mode_key(RESC, c), held))}"
                 for c in ("full", "16")]
        doc.p(f"Reduction of unseen_qifusion_s0 over unseen_baseline_s0 on {held} [95% CI]:",
              "; ".join(parts) + ".")
    if uq is None or aid_accuracy(uq, "test", mode_key(RESC, "full"), f"seen:{held}") is None:
        return
    doc.h(3, f"Where unseen_qifusion_s0's AID puts the {held} utterances")
    dists = {}
    for c in ("full", "16"):
        s = uq["sets"]["test"]
        pred = s["modes"][mode_key(RESC, c)]["pred_accent"]
        dists[c] = Counter(p for a, p in zip(s["utts"]["accent"], pred) if a == held and p is not None)
    total = {c: sum(d.values()) for c, d in dists.items()}
    accs = sorted(set(dists["full"]) | set(dists["16"]), key=lambda a: (-dists["full"][a], a))
    doc.table(["predicted accent", "full", "share", "chunk 16", "share"],
              [[a, *(x for c in DEV for x in (str(dists[c][a]), pct(dists[c][a] / max(total[c], 1))))]
               for a in accs])
    doc.p(f"AID accuracy of unseen_qifusion_s0 on the seen accents: "
          f"{pct(aid_accuracy(uq, 'test', mode_key(RESC, 'full'), f'seen:{held}'))} (full context).")


def section_training(doc: Doc, study: Study) -> None:
    doc.h(2, "Training")
    order = [n for n in BY_NAME if n in study.runs]
    rows = []
    for n in order:
        r = study.runs[n]
        t = r["train"]
        last = t["epochs"][-1] if t.get("epochs") else {}
        aps = t.get("audio_per_s_median")
        rows.append([n, r["group"], f"{r.get('num_params', 0) / 1e6:.2f}M", str(t.get("steps", DASH)),
                     f"{t['final_loss']:.2f}" if t.get("final_loss") is not None else DASH,
                     DASH if aps is None else f"{aps:.1f}", str(len(t.get("epochs", []))),
                     f2(last.get("dev_cer")), pct(last.get("dev_aid_acc")),
                     DASH if r.get("eval_wall_s") is None else f"{r['eval_wall_s']:.0f}"])
    doc.table(["run", "group", "params", "steps", "final loss", "audio s/s (median)", "epochs",
               "last-epoch dev CER", "dev AID", "eval s"], rows, left=2)
    main = [r for r in study.group("main")]
    if not main:
        return
    n_ep = max(len(r["train"].get("epochs", [])) for r in main)
    doc.p("Dev CER (%) at the end of each epoch (the trainer's CTC greedy dev decode at full context):")
    doc.table(["run", *(f"epoch {i + 1}" for i in range(n_ep))],
              [[r["run"], *(f2(e.get("dev_cer")) for e in r["train"].get("epochs", [])),
                *([DASH] * (n_ep - len(r["train"].get("epochs", []))))] for r in main])
    loss = {r["run"]: ([s for s, _ in r["train"]["curve"]], [v for _, v in r["train"]["curve"]])
            for r in main}
    dev = {}
    for r in main:
        eps = [e for e in r["train"].get("epochs", []) if e.get("dev_cer") is not None]
        dev[r["run"]] = ([e["step"] for e in eps], [e["dev_cer"] for e in eps])
    doc.image("learning_curves.png", "learning curves",
              plot_panels, [Panel("training loss", "step", "loss", loss, marker=""),
                            Panel("dev CER per epoch", "step", "CER (%)", dev)])
    means = seed_stats([r["train"].get("audio_per_s_median") for r in main])
    if means is not None:
        doc.p(f"Median training throughput over the main runs: {means.mean:.1f} s of audio per second.")
