"""Helpers for the recognizer/transcribe/longform tests: a random-weight model dir and audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from qifusion.decode.recognizer import Recognizer, Stream

ACCENTS = ["en-029", "en-gb-scotland", "en-us"]


def make_random_model_dir(path: Path, *, seed: int = 0) -> Path:
    """conf/tiny.yaml with random weights; the CTC head is scaled up so outputs are peaky."""
    from qifusion.config import load_config
    from qifusion.data.tokenizer import Tokenizer
    from qifusion.modeldir import save_model_dir
    from qifusion.models.model import QifusionModel

    torch.manual_seed(seed)
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "conf" / "tiny.yaml")
    # random weights on un-normalised fbank (no CMVN stats): without the embedding scale the random blocks
    # still vary the output from frame to frame, so transcripts are long enough to compare token by token
    cfg.model.encoder.embed_scale = False
    tok = Tokenizer.build(["the quick brown fox jumps over the lazy dog's back"])
    model = QifusionModel(cfg.model, vocab_size=tok.vocab_size, num_accents=len(ACCENTS))
    with torch.no_grad():
        model.ctc.proj.weight.mul_(8.0)
        model.ctc.proj.bias[0] += 4.0  # some blank frames, as in a real CTC model
    return save_model_dir(path, model=model, config=cfg, tokenizer=tok, accents=ACCENTS, card={"test": True})


def noise_utterance(seconds: float, *, sr: int, seed: int) -> np.ndarray:
    """Amplitude-modulated noise + tones (speech-like energy envelope), float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
    x = 0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * rng.uniform(150, 400) * t)
    return (env * x).astype(np.float32)


def run_stream(rec: Recognizer, samples: np.ndarray, sr: int, *, seed: int = 0, max_piece: int = 4000,
               stream: Stream | None = None) -> Stream:
    """Feed ``samples`` in random piece sizes, decode while ready, finish; returns the stream."""
    rng = np.random.default_rng(seed)
    s = stream or rec.create_stream()
    i = 0
    while i < samples.shape[0]:
        n = int(rng.integers(1, max_piece))
        s.accept_waveform(sr, samples[i : i + n])
        i += n
        while rec.is_ready(s):
            rec.decode(s)
    s.input_finished()
    while rec.is_ready(s):
        rec.decode(s)
    return s
