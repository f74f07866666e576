"""Markdown tables (for docs/synth.md) from the JSONs of :mod:`benchmarks.corpus_check`.

```bash
python -m benchmarks.corpus_table benchmarks/results/corpus/accents.json \
    benchmarks/results/corpus/benchmark.json
```
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def kept_dev(i: dict[str, Any]) -> tuple[float | None, float | None, str]:
    """(dev acc, dev acc on unseen-source speakers, label) of the model a corpus-check run kept: an epoch
    (``kept_by_dev``, 1-based; older JSONs: ``best_epoch_by_dev``) or ``"avg"`` of the last epochs."""
    kept = i.get("kept_by_dev", i.get("best_epoch_by_dev", 0))
    if kept == "avg":
        n = i.get("config", {}).get("average_last")
        return i.get("dev_acc_avg_last"), i.get("dev_acc_unseen_source_avg_last"), f"avg of last {n}"
    if not kept:
        return None, None, "-"
    focus = i.get("dev_acc_unseen_source_by_epoch") or []
    return i["dev_acc_by_epoch"][kept - 1], focus[kept - 1] if focus else None, f"epoch {kept}"


def summary_rows(results: list[dict[str, Any]]) -> list[str]:
    """One row per corpus: classifier accuracy overall / unseen source, chance, training, ASR range."""
    rows = ["| corpus | accents (chance) | test acc, unseen speakers | test acc, unseen source voices "
            "(utts) | dev acc, all / unseen source (model kept) | classifier training | "
            "pocketsphinx WER per accent | baseline test CER, worst / majority accent |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        i = r.get("identifiability", {})
        asr = r.get("pocketsphinx", {}).get("per_accent", {})
        wers = sorted((v["wer"], a) for a, v in asr.items())
        wer = f"{wers[0][0]:.0f}% ({wers[0][1]}) .. {wers[-1][0]:.0f}% ({wers[-1][1]})" if wers else "-"
        dev, dev_focus, kept = kept_dev(i)
        b = r.get("baseline")
        hurt = "-"
        if b:  # train-voice speakers (results before 2026-12-05 18:30: all test speakers)
            per = b.get("per_accent_cer_train_voice", b["per_accent_cer"])
            hurt = (f"{per[b['worst']]:.1f}% ({b['worst']}) / {per[b['majority']]:.1f}% ({b['majority']}) = "
                    f"{b['worst_over_majority']:.2f}x")
        name = f"`{r.get('preset')}`" + (f" (block {i['encoder_block']} of an ASR encoder)"
                                          if i.get("encoder") else "")
        rows.append(f"| {name} | {len(i.get('accents', []))} ({_pct(i.get('chance'))}) | "
                    f"{_pct(i.get('test_acc'))} | {_pct(i.get('test_acc_unseen_source'))} "
                    f"({i.get('test_utts_unseen_source', 0)}) | {_pct(dev)} / {_pct(dev_focus)} ({kept}) | "
                    f"{i.get('epochs_run')} epochs, {i.get('steps')} steps, {i.get('train_minutes')} min | "
                    f"{wer} | {hurt} |")
    return rows


def accent_rows(r: dict[str, Any]) -> list[str]:
    """Per accent of one corpus: test accuracy (all / unseen source), most predicted, pocketsphinx WER."""
    i = r.get("identifiability", {})
    asr = r.get("pocketsphinx", {}).get("per_accent", {})
    rows = [f"`{r.get('preset')}` per accent:", "",
            "| accent | test acc | unseen-source acc (utts) | predicted as | pocketsphinx WER (words) | "
            "baseline test CER: all / train voices / held-out voices |",
            "|---|---:|---:|---|---:|---:|"]
    b = r.get("baseline", {})
    kinds = [b.get(f"per_accent_cer{k}", {}) for k in ("", "_train_voice", "_held_out")]
    for a, v in sorted(i.get("per_accent", {}).items(), key=lambda kv: asr.get(kv[0], {}).get("wer", 0)):
        pred = ", ".join(f"{k} {n}" for k, n in list(v["predicted"].items())[:3])
        w = asr.get(a)
        wer = f"{w['wer']:.1f}% ({w['words']})" if w else "-"
        rows.append(f"| {a} | {_pct(v['acc'])} | {_pct(v['acc_unseen_source'])} ({v['n_unseen_source']}) | "
                    f"{pred} | {wer} | {' / '.join(f'{d[a]:.1f}%' if a in d else '-' for d in kinds)} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path, help="corpus_check JSONs")
    args = ap.parse_args(argv)
    results = [json.loads(p.read_text()) for p in args.results]
    lines = summary_rows(results)
    for r in results:
        lines += ["", *accent_rows(r)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
