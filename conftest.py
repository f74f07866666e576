"""Shared pytest fixtures of tests/ and benchmarks/tests/ (a root conftest, so neither package imports the
other). OMP_WAIT_POLICY must be set before torch loads (see DEVELOPERS)."""

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


@pytest.fixture(scope="session")
def tiny_model_dir(synth_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model dir trained on ``synth_corpus`` with ``conf/tiny.yaml`` (~1 min on 2 cores; session-wide).

    Rough but recognisable: it has seen the 18 training utterances 40 times (train-set CER well below
    dev CER; dev CER about 70%). Layout as every model dir: model.pt, config.yaml, units.txt,
    accents.txt, cmvn.json, card.json. Treat it as read-only.
    """
    import torch

    from qifusion.train.run import train

    exp = tmp_path_factory.mktemp("tiny_model") / "exp"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(config_path=Path(__file__).resolve().parent / "conf" / "tiny.yaml", data_dir=synth_corpus,
              exp_dir=exp, resume=False, device="cpu", init=None,
              overrides=["train.max_epochs=40", "train.max_minutes=0",  # epochs, not machine speed
                         "train.lr=0.004", "train.warmup_steps=20", "data.max_duration=30",
                         "train.keep_checkpoints=1", "train.log_interval=20"])
    finally:
        torch.set_num_threads(threads)
    return exp / "final"
