"""Shared pytest fixtures. OMP_WAIT_POLICY must be set before torch loads (see DEVELOPERS)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# --------------------------------------------------------------------------------------------
# synthetic corpus (qifusion synth)
# --------------------------------------------------------------------------------------------
from pathlib import Path

import pytest

SYNTH_ACCENTS = ["en-us", "en-gb-scotland", "en-029"]


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic corpus: 3 accents (en-us, en-gb-scotland, en-029) x 8 utterances, seed 0.

    Returns the root holding ``train/`` (6 per accent), ``dev/`` and ``test/`` (1 per accent) Kaldi dirs
    with ``cuts.jsonl.gz``; 16 kHz mono int16 wavs. Needs espeak-ng and sox. Treat it as read-only.
    """
    from qifusion.data.synth import synthesize_corpus

    root = tmp_path_factory.mktemp("synth") / "corpus"
    summary = synthesize_corpus(out_dir=root, preset="demo", utts_per_accent=8, seed=0, jobs=2,
                                accents=SYNTH_ACCENTS, progress=False)
    assert summary.ok, summary.failed
    return root
