"""``make demo``: the main job, end to end, on the embedded corpus.

1. synthesise the ``demo`` preset corpus into ``data/demo`` (skipped when already there; resumable);
2. take the shipped model ``models/accents-en-qifusion`` when it exists, else train ``conf/tiny.yaml``
   into ``exp/demo_tiny`` (resumable: re-running continues);
3. decode the test split in streaming mode (chunk 16) and print the per-accent CER / accent-ID table;
   the report with plots lands in ``exp/demo_decode``;
4. show one ``qifusion transcribe`` example.

Run as ``python -m qifusion.demo [--root DIR]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

SHIPPED = Path("models/accents-en-qifusion")


def _run(args: list[str]) -> None:
    print("+ qifusion " + " ".join(args), flush=True)
    rc = subprocess.call([sys.executable, "-m", "qifusion", *args])
    if rc != 0:
        raise SystemExit(f"demo: 'qifusion {' '.join(args)}' failed with exit code {rc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--root", default=".", help="where data/ and exp/ are written")
    args = parser.parse_args(argv)
    root = Path(args.root)
    t0 = time.time()
    data = root / "data" / "demo"
    _run(["synth", "--out", str(data), "--preset", "demo", "--seed", "0"])

    if (SHIPPED / "model.pt").exists():
        model = SHIPPED
        print(f"using the shipped model {model}")
    else:
        exp = root / "exp" / "demo_tiny"
        model = exp / "final"
        if not (model / "model.pt").exists():
            resume = ["--resume"] if any(exp.glob("*.pt")) else []
            _run(["train", "--config", "conf/tiny.yaml", "--data", str(data), "--exp", str(exp), *resume])

    out = root / "exp" / "demo_decode"
    _run(["decode", "--model", str(model), "--data", str(data / "test"), "--out", str(out),
          "--mode", "attention_rescoring", "--chunk-size", "16"])
    print(f"report: {out / 'report.md'} (plots beside it)")  # decode printed the per-accent table

    first = (data / "test" / "wav.scp").read_text().split("\n", 1)[0].split(maxsplit=1)[1]
    _run(["transcribe", "--model", str(model), "--streaming", "--chunk-size", "16", first])
    print(f"\ndemo finished in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
