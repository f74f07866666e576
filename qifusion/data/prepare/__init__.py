"""Corpus preparation: ``qifusion prepare {kespeech,magicdata-ramc} SRC --out DIR [--shards N]``.

Each preparer writes ``DIR/{train,dev,test}/`` Kaldi dirs (see :func:`qifusion.data.manifest.
write_kaldi_dir`), ``DIR/accents.txt`` and ``DIR/prepare_report.json`` (kept/skipped counts);
``--shards N`` also writes ``DIR/<split>/shards/`` tar shards (:mod:`qifusion.data.shards`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from qifusion.errors import UserError

CORPORA = ("kespeech", "magicdata-ramc")


def prepare_corpus(*, corpus: str, src: Path, out_dir: Path, shards: int) -> None:
    """Prepare ``corpus`` found at ``src`` into ``out_dir``; with ``shards > 0`` also write tar shards."""
    src, out_dir = Path(src), Path(out_dir)
    if not src.is_dir():
        raise UserError(f"corpus dir {src} does not exist")
    if shards < 0:
        raise UserError(f"--shards must be >= 0, got {shards}")
    if corpus == "kespeech":
        from qifusion.data.prepare.kespeech import prepare_kespeech

        prepare_kespeech(src, out_dir)
    elif corpus == "magicdata-ramc":
        from qifusion.data.prepare.magicdata_ramc import prepare_magicdata_ramc

        prepare_magicdata_ramc(src, out_dir)
    else:
        raise UserError(f"unknown corpus '{corpus}' (choose from {', '.join(CORPORA)})")
    if shards > 0:
        from qifusion.data.manifest import load_data_dir
        from qifusion.data.shards import write_shards

        for split in ("train", "dev", "test"):
            rep = write_shards(load_data_dir(out_dir / split), out_dir / split / "shards", num_shards=shards)
            print(f"{split}: {rep.summary()}", file=sys.stderr)
