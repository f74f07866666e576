"""Markdown tables of the LM benchmark results (pasted into docs/lm.md).

    python -m benchmarks.lm.summary            # reads benchmarks/results/lm_*.json
"""

from __future__ import annotations

import json
from pathlib import Path

R = Path(__file__).resolve().parents[1] / "results"


def wer_table(name: str, title: str) -> list[str]:
    path = R / name
    if not path.is_file():
        return [f"({name} missing)"]
    d = json.loads(path.read_text())
    out = [f"{title} (`benchmarks/results/{name}`, {d['rows'][0]['utts']} utterances, LM "
           f"{d['lm_meta'].get('sentences')} sentences / {d['lm_meta'].get('lexicon_words')} words, "
           f"order {d['lm_meta'].get('order')}):", "",
           "| chunk | mode | WER % | CER % | rel. WER vs attention_rescoring | RTF (1 thread) |",
           "|---|---|---|---|---|---|"]
    for r in d["rows"]:
        chunk = "full" if r["chunk_size"] == -1 else str(r["chunk_size"])
        rel = r.get("rel_wer_vs_attention_rescoring")
        out.append(f"| {chunk} | `{r['mode']}` | {r['wer']:.2f} | {r['cer']:.2f} | "
                   f"{'' if rel is None else f'{100 * rel:+.1f} %'} | {r['rtf']:.4f} |")
    return [*out, ""]


def hotword_table(name: str) -> list[str]:
    path = R / name
    if not path.is_file():
        return [f"({name} missing)"]
    d = json.loads(path.read_text())
    out = [f"`benchmarks/results/{name}`: {d['hotwords']} hotwords ({d['oov']} not in the LM), "
           f"{d['utts_elsewhere']} utterances without any of them (\"elsewhere\"):", "",
           "| boost | recall (all) | recall OOV | recall in-vocabulary rare | WER % | WER elsewhere % |",
           "|---|---|---|---|---|---|"]
    rows = [{"boost": "none", **d["without"]}, *d["with"]]
    for r in rows:
        out.append(f"| {r['boost']} | {r['recall_all']['recall']:.3f} ({r['recall_all']['found']}/"
                   f"{r['recall_all']['total']}) | {r['recall_oov']['recall']:.3f} | "
                   f"{r['recall_iv_rare']['recall']:.3f} | {r['wer']:.2f} | {r['wer_elsewhere']:.2f} |")
    return [*out, ""]


def main() -> None:
    lines = [*wer_table("lm_wer_test.json", "Benchmark test split, LM from the training text"),
             *wer_table("lm_wer_test_english.json", "Benchmark test split, general-English LM"),
             *wer_table("lm_wer_heldout_english.json", "Held-out preset, general-English LM"),
             *wer_table("lm_wer_heldout_train.json", "Held-out preset, LM from the benchmark training text"),
             *hotword_table("lm_hotwords_dev.json"), *hotword_table("lm_hotwords_test.json")]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
