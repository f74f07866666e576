"""Speech-gate and narrowband statistics on dev speech and on sox-made non-speech.

``python -m benchmarks.ood.measure --model models/accents-en-qifusion --dev data/benchmark/dev
[--every 1] [--out benchmarks/results/ood.json]``

For every input: CTC output frames whose blank posterior is below 0.5 ("speech frames") with the
full-context forward and with chunk 16, the mean top non-blank posterior on them, the share of energy
above 4 kHz, and whether :func:`qifusion.decode.gate.is_speech` and
:func:`qifusion.data.bandwidth.analyse_bandwidth` flag it. The non-speech inputs are made with sox
(silence, dither, white/pink/brown noise at several levels, hum, a chord, plucked notes, a tremolo
square wave, a sine sweep); narrowband copies of dev speech are made by sox resampling to 8 kHz.
The gate's confidence threshold is the model's calibrated one (``qifusion calibrate`` on dev);
the speech-frame and narrowband thresholds are chosen on dev and these made-up inputs, never on test.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from qifusion.data.audio import read_audio
from qifusion.data.bandwidth import HF_NARROWBAND_DB, analyse_bandwidth
from qifusion.data.features import compute_fbank
from qifusion.decode.gate import MIN_SPEECH_FRAMES, SpeechEvidence
from qifusion.eval.calibration import load_calibration
from qifusion.fileio import atomic_write_text
from qifusion.modeldir import load_model_dir

ROWS_MODEL = [""]
GATE = [0.0]  # the model's calibrated gate_min_confidence
SOX_INPUTS = {
    "silence": "trim 0 3",
    "dither": "trim 0 3 dither -s",
    "white_-10dB": "synth 3 whitenoise vol -10dB",
    "white_-20dB": "synth 3 whitenoise vol -20dB",
    "white_-40dB": "synth 3 whitenoise vol -40dB",
    "pink_-20dB": "synth 3 pinknoise vol -20dB",
    "pink_-40dB": "synth 3 pinknoise vol -40dB",
    "brown_-20dB": "synth 3 brownnoise vol -20dB",
    "hum_50Hz": "synth 3 sine 50 vol -30dB",
    "chord_C_major": "synth 3 sine 261.6 sine 329.6 sine 392 remix - vol -10dB",
    "plucked_notes": "synth 0.5 pluck C4 : synth 0.5 pluck E4 : synth 0.5 pluck G4 : synth 0.5 pluck C5 "
                     ": synth 0.5 pluck G4 : synth 0.5 pluck E4",
    "tremolo_square": "synth 3 square 220 tremolo 4 60 vol -15dB",
    "sine_sweep": "synth 3 sine 100-4000 vol -15dB",
}


def sox_make(out: Path, effects: str, rate: int = 16000) -> Path:
    """``sox -R -n -r RATE -b 16 OUT EFFECTS`` (``-R``: repeatable noise, same file every run)."""
    subprocess.run(["sox", "-R", "-n", "-r", str(rate), "-b", "16", str(out), *effects.split()], check=True)
    return out


def stats(model: torch.nn.Module, samples: np.ndarray, sr_in: int, num_mel_bins: int) -> dict:
    feats = compute_fbank(samples, sample_rate=16000, num_mel_bins=num_mel_bins)
    row: dict = {"bandwidth": analyse_bandwidth(samples, 16000, input_rate=sr_in).to_dict()}
    for chunk in (-1, 16):
        with torch.inference_mode():
            enc = model.encode(feats[None], torch.tensor([feats.shape[0]]), chunk_size=chunk, left_chunks=-1)
        ev = SpeechEvidence()
        ev.update(enc.ctc_log_probs[0].float())
        row[f"chunk{chunk}"] = {"speech_frames": ev.speech_frames, "frames": ev.frames,
                                "confidence": round(ev.confidence, 4),
                                "is_speech": ev.is_speech(GATE[0])}
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="models/accents-en-qifusion")
    p.add_argument("--dev", default="data/benchmark/dev")
    p.add_argument("--every", type=int, default=1, help="use every N-th dev utterance")
    p.add_argument("--out", default=None, help="also write the summary here (text)")
    args = p.parse_args(argv)
    loaded = load_model_dir(args.model)
    ROWS_MODEL[0] = Path(args.model).name
    cal = load_calibration(Path(args.model))
    GATE[0] = cal.gate_min_confidence if cal is not None else 0.0
    nmb = loaded.config.data.num_mel_bins
    dev = [line.split(maxsplit=1)[1].strip() for line in
           (Path(args.dev) / "wav.scp").read_text().splitlines()][:: args.every]
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, effects in SOX_INPUTS.items():
            f = sox_make(Path(tmp) / f"{name}.wav", effects)
            rows[f"nonspeech/{name}"] = stats(loaded.model, read_audio(f), 16000, nmb)
        for i, wav in enumerate(dev):
            rows[f"dev/{Path(wav).stem}"] = stats(loaded.model, read_audio(wav), 16000, nmb)
            if i % 8 == 0:  # narrowband copies of every 8th one
                nb = Path(tmp) / "nb.wav"
                subprocess.run(["sox", wav, "-r", "8000", str(nb)], check=True)
                rows[f"dev8k/{Path(wav).stem}"] = stats(loaded.model, read_audio(nb), 8000, nmb)
    lines = summarise(rows)
    print("\n".join(lines))
    if args.out:
        atomic_write_text(args.out, "\n".join(lines) + "\n")
    return 0


def summarise(rows: dict[str, dict]) -> list[str]:
    """Summary lines: gate and narrowband counts per group, and every non-speech input."""
    out: list[str] = [f"model {ROWS_MODEL[0]}; gate: >= {MIN_SPEECH_FRAMES} speech frames and confidence"
                      f" >= {GATE[0]} (aid_calibration.json); narrowband: rate < 16 kHz or energy above 4 kHz"
                      f" < {HF_NARROWBAND_DB} dB"]
    print_ = out.append
    for group in ("dev", "dev8k"):
        sel = [r for k, r in rows.items() if k.startswith(group + "/")]
        if not sel:
            continue
        for chunk in ("chunk-1", "chunk16"):
            sf_ = np.array([r[chunk]["speech_frames"] for r in sel])
            conf = np.array([r[chunk]["confidence"] for r in sel])
            rej = sum(not r[chunk]["is_speech"] for r in sel)
            print_(f"{group:6s} {chunk:8s} n={len(sel)} speech_frames min {sf_.min()}"
                   f" p1 {np.percentile(sf_, 1):.0f}"
                  f" | confidence min {conf.min():.3f} p1 {np.percentile(conf, 1):.3f}"
                  f" | gated as non-speech: {rej}")
        hf = np.array([r["bandwidth"]["hf_ratio_db"] for r in sel])
        flagged = sum(r["bandwidth"]["narrowband"] for r in sel)
        print_(f"{group:6s} energy above 4 kHz (dB re total): max {hf.max():.1f} min {hf.min():.1f}"
              f" | narrowband flagged {flagged}/{len(sel)}")
    print_("non-speech inputs (sox):")
    for k, r in rows.items():
        if k.startswith("nonspeech/"):
            a, b = r["chunk-1"], r["chunk16"]
            print_(f"  {k[10:]:16s} speech_frames {a['speech_frames']:3d}/{b['speech_frames']:3d}"
                  f" conf {a['confidence']:.2f}/{b['confidence']:.2f}"
                  f" -> {'EMPTY' if not a['is_speech'] else 'text'} (full) /"
                  f" {'EMPTY' if not b['is_speech'] else 'text'} (chunk 16)")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
