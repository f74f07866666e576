"""How differently do the espeak-ng English accents pronounce the same sentences? (word-level IPA diff)

For N sentences of the synth text pool, ``espeak-ng -q --ipa -v VOICE`` gives each accent's IPA; the
difference rate of an accent is the word-level edit distance between its IPA words and en-us's IPA
words, divided by the number of en-us IPA words (espeak joins some function words, e.g. ``ʌvðə``; the
alignment absorbs that). Reported with stress marks and with stress marks removed.

    .venv/bin/python benchmarks/ipa_diff.py --num 300 --seed 0 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess

import editdistance

from qifusion.data.synth_text import sentence_pool
from qifusion.data.voices import ESPEAK_ACCENTS

STRESS = str.maketrans("", "", "ˈˌ")


def ipa_lines(voice: str, sentences: list[str]) -> list[list[str]]:
    """IPA words per sentence (list of N lists) for ``voice``; one espeak-ng call for all sentences."""
    text = "".join(s + ".\n" for s in sentences)
    cmd = ["espeak-ng", "-q", "--ipa", "-v", voice, "--stdin"]
    out = subprocess.run(cmd, input=text, capture_output=True, text=True, check=True).stdout
    lines = [ln.split() for ln in out.splitlines() if ln.strip()]
    if len(lines) == len(sentences):
        return lines
    if len(sentences) == 1:  # espeak split the sentence into clauses: join them
        return [[w for ln in lines for w in ln]]
    return [ipa_lines(voice, [s])[0] for s in sentences]  # realign: one call per sentence


def diff_rate(ref: list[list[str]], hyp: list[list[str]], *, strip_stress: bool) -> float:
    """Word-level edit distance of ``hyp`` against ``ref`` over all sentences / words in ``ref``."""
    errs = words = 0
    for r, h in zip(ref, hyp, strict=True):
        if strip_stress:
            r, h = [w.translate(STRESS) for w in r], [w.translate(STRESS) for w in h]
        errs += editdistance.eval(r, h)
        words += len(r)
    return errs / max(1, words)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=300, help="number of sentences")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    sentences = random.Random(args.seed).sample(sentence_pool(), args.num)
    ref = ipa_lines("en-us", sentences)
    rows = []
    for accent in ESPEAK_ACCENTS:
        hyp = ipa_lines(accent, sentences)
        rows.append({"accent": accent, "diff": diff_rate(ref, hyp, strip_stress=False),
                     "diff_no_stress": diff_rate(ref, hyp, strip_stress=True)})
    n_words = sum(len(r) for r in ref)
    print(f"{args.num} sentences, {n_words} en-us IPA words, seed {args.seed}\n")
    print("| accent | words differing from en-us | ignoring stress marks |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['accent']} | {100 * r['diff']:.1f}% | {100 * r['diff_no_stress']:.1f}% |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"num": args.num, "seed": args.seed, "words": n_words, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
