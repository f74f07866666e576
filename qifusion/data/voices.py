"""Accents and speakers of the synthetic corpus (espeak-ng English dialects and MBROLA L2 voices).

Speakers of the ``espeak`` engine are espeak-ng voice *variants* (``-v en-gb-scotland+f4``): files under
``espeak-ng-data/voices/!v``. Variant names are case-sensitive files and an unknown one silently falls
back to the base voice, so every variant is checked on disk before use (:func:`available_variants`).
Variants are split once, by hand, into train / dev / test groups so dev and test speakers are never seen
in training; near-duplicate variants (``steph``/``steph2``, ``edward``/``edward2``, ``Michael``/``Mario``)
stay in one group. Variants reserved for evaluation by others (:data:`RESERVED_VARIANTS`) are never used
for training, dev or test, only by the held-back evaluation set (:func:`reserved_speakers`, preset
``heldout``); whisper, robot, echo-heavy and test variants are never used.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from qifusion.errors import UserError

ESPEAK_ACCENTS = (
    "en-us", "en-us-nyc", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-029",
)
RESERVED_VARIANTS = frozenset({"m2", "f3", "m6", "f5", "Andy", "Annie", "Alex", "linda"})
RESERVED_ORDER = tuple(sorted(RESERVED_VARIANTS))  # fixed order (a frozenset of str iterates by hash)
# espeak-ng 1.51 finds "en-gb" by language (its file is gmw/en), which drops a "+variant": en-gb+m1 sounds
# exactly like en-gb. The file name "en" is the same voice and keeps the variant (every preset uses it;
# corpora made before 2026-11-25 had one en-gb voice in all splits and must be regenerated).
VARIANT_BASE = {"en-gb": "en"}
VARIANT_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "m1", "m3", "m4", "m5", "m7", "m8", "edward", "edward2", "adam", "benjamin", "max", "paul", "robert",
        "rob", "quincy", "gustave", "michel", "Diogo", "Mike", "Jacky", "travis", "ed", "pedro",
        "f1", "f2", "steph", "steph2", "steph3", "belinda", "aunty", "anika", "grandma",
    ),
    "dev": ("david", "marcelo", "Denis", "Hugo", "Henrique", "f4", "Alicia"),
    "test": ("victor", "Michael", "Mario", "Gene", "Gene2", "Andrea", "shelby"),
}

# MBROLA voices that espeak-ng drives as English with a foreign accent: L1 -> espeak voice names.
L2_VOICES: dict[str, tuple[str, ...]] = {
    "l2-de": ("mb-de1-en", "mb-de2-en", "mb-de3-en", "mb-de4-en", "mb-de5-en", "mb-de6-en"),
    "l2-fr": ("mb-fr1-en", "mb-fr4-en"),
    "l2-nl": ("mb-nl2-en",),
    "l2-pl": ("mb-pl1-en",),
    "l2-hu": ("mb-hu1-en",),
    "l2-ro": ("mb-ro1-en",),
    "l2-sw": ("mb-sw1-en", "mb-sw2-en"),
}
MBROLA_DIRS = (Path("/usr/share/mbrola"), Path("/usr/lib/x86_64-linux-gnu/mbrola"))
L2_HELP = (
    "The l2 preset needs the MBROLA synthesiser and voices, which are in Debian contrib/non-free "
    "(non-commercial licence): add 'contrib non-free' to your apt sources (e.g. 'Components: main contrib "
    "non-free' in /etc/apt/sources.list.d/debian.sources), then run 'sudo apt-get update && sudo apt-get "
    "install mbrola mbrola-de1 mbrola-de2 mbrola-de3 mbrola-de4 mbrola-de5 mbrola-de6 mbrola-fr1 mbrola-fr4 "
    "mbrola-nl2 mbrola-pl1 mbrola-hu1 mbrola-ro1 mbrola-sw1 mbrola-sw2'"
)


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: ``voice`` is the full espeak-ng ``-v`` argument."""

    speaker_id: str  # e.g. "en-gb-scotland_f4" (Kaldi-safe, no '+')
    accent: str
    voice: str  # e.g. "en-gb-scotland+f4" or "mb-de1-en"


@lru_cache(maxsize=1)
def espeak_data_dir() -> Path:
    """The ``espeak-ng-data`` dir the installed ``espeak-ng`` uses (from ``espeak-ng --version``)."""
    if shutil.which("espeak-ng") is None:
        raise UserError("espeak-ng is not installed: run 'sudo apt-get install espeak-ng sox' "
                        "or 'make setup'")
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"Data at:\s*(\S+)", out)
    if not m or not Path(m.group(1)).is_dir():
        raise UserError(f"cannot find espeak-ng-data (espeak-ng --version said: {out.strip()!r})")
    return Path(m.group(1))


def available_variants(names: tuple[str, ...] | list[str], *, allow_reserved: bool = False) -> list[str]:
    """The variants of ``names`` whose file exists (case-sensitive) under ``espeak-ng-data/voices/!v``;
    reserved variants are dropped unless ``allow_reserved`` (the held-back set only)."""
    vdir = espeak_data_dir() / "voices" / "!v"
    present = {p.name for p in vdir.iterdir()} if vdir.is_dir() else set()
    return [n for n in names if n in present and (allow_reserved or n not in RESERVED_VARIANTS)]


def espeak_speakers(accents: list[str]) -> dict[str, list[Speaker]]:
    """Split name -> speakers (every accent x every available variant of that split's group)."""
    out: dict[str, list[Speaker]] = {}
    for split, names in VARIANT_SPLITS.items():
        variants = available_variants(names)
        if not variants:
            raise UserError(f"none of the espeak-ng variants for the {split} split exist in "
                            f"{espeak_data_dir() / 'voices' / '!v'}: is the espeak-ng-data package complete?")
        out[split] = [Speaker(f"{a}_{v}", a, variant_voice(a, v)) for a in accents for v in variants]
    return out


def reserved_speakers(accents: list[str]) -> list[Speaker]:
    """Held-back speakers: every accent x every reserved variant (:data:`RESERVED_ORDER`). Raises
    UserError naming the missing files when any reserved variant is not on disk (a missing one would
    silently fall back to the base voice)."""
    variants = available_variants(RESERVED_ORDER, allow_reserved=True)
    missing = [v for v in RESERVED_ORDER if v not in variants]
    if missing:
        raise UserError(f"reserved espeak-ng variant(s) {', '.join(missing)} missing from "
                        f"{espeak_data_dir() / 'voices' / '!v'}: is the espeak-ng-data package complete?")
    return [Speaker(f"{a}_{v}", a, variant_voice(a, v)) for a in accents for v in variants]


def variant_voice(accent: str, variant: str) -> str:
    """The ``-v`` argument that really applies ``variant`` to ``accent`` (see :data:`VARIANT_BASE`)."""
    return f"{VARIANT_BASE.get(accent, accent)}+{variant}"


def mbrola_voice_installed(voice: str) -> bool:
    """True when the MBROLA database behind espeak voice ``mb-XXN-en`` is installed."""
    db = voice.split("-")[1]  # "mb-de1-en" -> "de1"
    return any((d / db / db).is_file() or (d / db).is_file() for d in MBROLA_DIRS)


def l2_speakers(accents: list[str]) -> dict[str, list[Speaker]]:
    """Split name -> speakers for the MBROLA ``l2`` preset.

    With 3+ voices for an L1 the voices are split speaker-disjoint (train gets the rest); with fewer,
    every split uses all of them (speaker-disjoint splits are impossible; the summary says so).
    Raises UserError with install instructions when mbrola or a voice is missing.
    """
    if shutil.which("mbrola") is None:
        raise UserError("'mbrola' is not installed. " + L2_HELP)
    missing = [v for a in accents for v in L2_VOICES[a] if not mbrola_voice_installed(v)]
    if missing:
        raise UserError(f"MBROLA voices missing: {', '.join(missing)}. " + L2_HELP)
    out: dict[str, list[Speaker]] = {"train": [], "dev": [], "test": []}
    for a in accents:
        spk = [Speaker(f"{a}_{v}", a, v) for v in L2_VOICES[a]]
        if len(spk) >= 3:
            out["dev"].append(spk[-2])
            out["test"].append(spk[-1])
            out["train"].extend(spk[:-2])
        else:
            for split in out:
                out[split].extend(spk)
    return out


def l2_speaker_disjoint(accent: str) -> bool:
    """Whether the ``l2`` preset can keep dev/test speakers of ``accent`` out of train."""
    return len(L2_VOICES[accent]) >= 3
