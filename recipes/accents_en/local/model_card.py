"""Write a model card (``MODEL/README.md``) from the model dir's ``card.json`` and decode reports.

    python recipes/accents_en/local/model_card.py --model models/accents-en-qifusion \\
        --decode exp/ship/qifusion/decode_test_full --decode exp/ship/qifusion/decode_test_c16

Every number in the card is read from those files (``card.json``: data, steps, parameters, dev
metrics; each ``report.json``: CER/WER per accent, accent-ID accuracy, RTF), so the card never holds
hand-typed results (:mod:`qifusion.eval.model_card`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qifusion.eval.model_card import build_card
from qifusion.fileio import atomic_write_text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--decode", action="append", default=[], type=Path, help="dir with report.json")
    p.add_argument("--title", default=None)
    p.add_argument("--training", default="", help="how the model was trained (markdown)")
    args = p.parse_args()
    title = args.title or f"{args.model.name} (qifusion model dir)"
    text = build_card(args.model, args.decode, title=title, training=args.training)
    atomic_write_text(args.model / "README.md", text)
    print(args.model / "README.md")


if __name__ == "__main__":
    main()
