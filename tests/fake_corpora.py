"""Tiny fake KeSpeech and MagicData-RAMC layouts (noise audio) for `qifusion prepare` and recipe tests.

Both mirror the distributed directory layouts described in ``docs/prepare.md`` and include a few bad
items (missing/corrupt audio, unknown labels, noise-only turns) that preparation must skip and count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from qifusion.data.prepare.kespeech import SUBDIALECTS


def write_wav(path: Path, seconds: float, sr: int = 16000, seed: int = 0) -> None:
    """Write ``seconds`` of seeded Gaussian noise (std 0.2) as 16-bit PCM at ``sr`` Hz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.2 * np.random.default_rng(seed).standard_normal(int(seconds * sr)).astype(np.float32)
    sf.write(path, x, sr, subtype="PCM_16")


def write_lines(path: Path, lines: list[str]) -> None:
    """Write ``lines`` (newline-terminated, UTF-8), creating parent dirs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def fake_kespeech(src: Path) -> None:
    """``src/Tasks/ASR/<part>/`` for the 5 KeSpeech parts, one utterance per subdialect in each.

    Good utterances: ``{p}{i:02d}_utt`` (part index p, subdialect index i, 0.2 + 0.05 i s), text
    ``今天，天气 很好！{i}``. ``train_phase1`` also lists 4 bad items: ``nofile`` (missing audio),
    ``notext`` (no transcript), ``baddial`` (subdialect ``Klingon``), ``corrupt`` (unreadable wav).
    Prepared: 18 train, 18 dev, 9 test utterances.
    """
    parts = {"train_phase1": 0, "train_phase2": 1, "dev_phase1": 2, "dev_phase2": 3, "test": 4}
    for part, p in parts.items():
        wav, text, sub, spk = [], [], [], []
        for i, dialect in enumerate(SUBDIALECTS):
            utt = f"{p}{i:02d}_utt"
            rel = f"Audio/{part}/{utt}.wav"
            write_wav(src / rel, 0.2 + 0.05 * i, seed=p * 10 + i)
            wav.append(f"{utt} {rel}")
            text.append(f"{utt} 今天，天气 很好！{i}")
            sub.append(f"{utt} {dialect}")
            spk.append(f"{utt} spk{p}{i}")
        d = src / "Tasks" / "ASR" / part
        if part == "train_phase1":  # bad items, each skipped and counted
            wav += ["nofile Audio/missing.wav", "notext Audio/train_phase1/000_utt.wav",
                    "baddial Audio/train_phase1/001_utt.wav", "corrupt Audio/corrupt.wav"]
            text += ["nofile 你好", "baddial 你好", "corrupt 你好"]
            sub += ["nofile Mandarin", "notext Mandarin", "baddial Klingon", "corrupt Beijing"]
            (src / "Audio" / "corrupt.wav").write_bytes(b"RIFF not really a wav")
        write_lines(d / "wav.scp", wav)
        write_lines(d / "text", text)
        write_lines(d / "utt2subdialect", sub)
        write_lines(d / "utt2spk", spk)


def fake_ramc(src: Path, *, split_dirs: bool) -> None:
    """``src/MDT2021S003/`` with ``SPKINFO.txt`` and one 4 s conversation per split.

    ``split_dirs``: ``WAV/<split>/`` + ``TXT/<split>/`` (else flat ``WAV/``, ``TXT/``; then split lists
    or name order decide the split). Conversation ``k`` (train 1, dev 2, test 3) has 6 turns: 2 good
    (speakers G0001 from Sichuan, G0002 from Beijing), then an unintelligible, a noise-only, an
    unknown-speaker and a reversed-time turn, each skipped and counted.
    """
    root = src / "MDT2021S003"
    write_lines(root / "SPKINFO.txt", [
        "CHANNEL\tSPEAKER_ID\tGENDER\tAGE\tREGION,CITY\tDEVICE",
        "C0\tG0001\tM\tMiddle-aged and young people\tSichuan\tMobile phone",
        "C0\tG0002\tF\tMiddle-aged and young people\tBeijing,Beijing\tMobile phone",
    ])
    for k, split in enumerate(("train", "dev", "test")):
        conv = f"CTS-CN-F2F-2019-11-15-{k + 1}"
        sub = f"{split}/" if split_dirs else ""
        write_wav(root / "WAV" / f"{sub}{conv}.wav", 4.0, seed=k)
        write_lines(root / "TXT" / f"{sub}{conv}.txt", [
            "[0.100,1.200]\tG0001\t男,普通话\t你好，最近怎么样？",
            "[1.300,2.000]\tG0002\t女,普通话\t还行[LAUGHTER]吧",
            "[2.000,2.500]\tG0001\t男,普通话\t[*]",
            "[2.500,3.000]\tG0002\t女,普通话\t[LAUGHTER]",
            "[3.000,3.900]\tG0009\t女,普通话\t谁",
            "[3.500,3.100]\tG0001\t男,普通话\t倒序",
        ])
