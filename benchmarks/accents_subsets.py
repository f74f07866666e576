"""Subsets of the ``accents`` corpus for results v2's unseen-accent and scaling runs (issue 21).

``accents8`` has every accent but ``scottish`` in train and dev (the unseen-accent pair); ``accents6``
and ``accents4`` the first 6 and 4 accents of :data:`ORDER` (the number-of-accents runs). Their test
split is the whole corpus's, every accent, so a model is tested on the accents it never heard as well.
The order is fixed here, before any of these runs: the majority accent first, then the accents by
language family (English, Germanic, Romance, Slavic, Uralic), Scottish (the unseen one) last.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

ORDER = ("us", "british", "german", "french", "dutch", "swedish", "polish", "hungarian", "scottish")
SUBSETS = {"accents8": ORDER[:8], "accents6": ORDER[:6], "accents4": ORDER[:4]}
UNSEEN = ORDER[-1]  # the accent the accents8 runs never hear
DONE = "subset.json"


def make(name: str, *, src: Path, dst: Path) -> Path:
    """Write subset ``name`` of the corpus ``src`` into ``dst`` (once: a finished one is returned as it
    is): train and dev keep the subset's accents, test keeps all; ``speakers.json`` is copied (so
    results name the same corpus fingerprint) and ``subset.json`` is written last."""
    from qifusion.data.manifest import load_data_dir, write_kaldi_dir
    from qifusion.errors import DataError
    from qifusion.fileio import atomic_write_text

    if (dst / DONE).is_file():
        return dst
    keep = SUBSETS[name]
    for split in ("train", "dev", "test"):
        utts = load_data_dir(src / split)
        missing = sorted(set(keep) - {u.accent for u in utts})
        if missing:
            raise DataError(f"{src / split}: no utterances of accent(s) {', '.join(missing)} "
                            f"for subset {name}")
        write_kaldi_dir([u for u in utts if split == "test" or u.accent in keep], dst / split)
    if (src / "speakers.json").is_file():
        shutil.copyfile(src / "speakers.json", dst / "speakers.json")
    atomic_write_text(dst / DONE, json.dumps({"from": str(src), "accents": list(keep)}, indent=1) + "\n")
    return dst
