"""Accents, source voices and derived speakers of the ``accents`` / ``accents-free`` corpora (issue 16).

Each accent is spoken by several **source voices** (a recorded voice database behind a synthesiser):

- L2 English (``german``, ``french``, ``dutch``, ``swedish``, ``polish``, ``hungarian``): espeak-ng's
  ``mb-XX-en`` voices, which read English with the phone set and recorded diphones of a native speaker
  of XX (MBROLA; Debian non-free, see :mod:`.voices_nonfree`). espeak-ng ships ``-en`` voices for only
  some databases of a language; :data:`DERIVED_EN_VOICES` adds the others that use the *same* phoneme
  translation table (``fr_phtrans`` for fr1..fr7, ``de6_phtrans`` for de5..de7): a voice file like
  the shipped ``-en`` one with the database, gender and pitch of the native voice, in a private
  espeak-ng data dir (:func:`espeak_en_data_dir`, symlinks to the system's plus these files; nothing
  in the system is changed). The Dutch nl1 and nl3 databases share nl2's
  table but lack many English diphones (MBROLA renders a missing one as silence: nl1 gave silent
  sentences), so ``dutch`` has nl2 only;
- native English: flite's CMU ARCTIC voices (``us``: slt, rms, kal16; ``scottish``: awb), festival's
  diphone voices (``us``: kal, ked; ``british``: rab) (free; festvox-rablpc16k is in Debian contrib, the rest
  in main), and MBROLA ``us1..3``/``en1``.

Source voices of an accent (in :data:`ACCENT_VOICES` order, after dropping non-free ones for
``accents-free``) get roles by :func:`voice_roles`: with 6+ voices the last two are test-only and the one
before dev-only; with 4-5 the last is test-only and the one before dev-only; with 3 the last serves dev
and test (never train); with 1-2 every voice serves every split (a classifier trained on one voice of
an accent cannot be expected to recognise the accent in another, so an accent needs two train voices
before one is held out); the order puts in train, for every test-only voice, two voices of the same
synthesiser (for German, of the same phoneme table). Each source voice yields **derived speakers** by a
deterministic transform ``(warp, tempo)`` applied with sox after synthesis: ``warp`` scales the whole
spectrum (formants and f0 together, like a larger or smaller speaker; ``speed``) and ``tempo`` the speaking
rate (``tempo``). Train speakers use :data:`TRAIN_TRANSFORMS` (warp and tempo in [0.95, 1.05]); dev and
test speakers use :data:`DEV_TRANSFORMS` / :data:`TEST_TRANSFORMS`, both outside that range in both
values, so no dev/test speaker is a train speaker even when its source voice is in train.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from qifusion.data.voices_nonfree import CONTRIB_FREE_PACKAGES, INSTALL_COMMAND, NONFREE_LICENCE
from qifusion.errors import UserError

MBROLA_DIRS = (Path("/usr/share/mbrola"), Path("/usr/lib/x86_64-linux-gnu/mbrola"))
FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices/english")


@dataclass(frozen=True)
class SourceVoice:
    """One voice database: ``engine`` is ``mbrola`` (espeak-ng ``-v name``), ``flite`` (``-voice name``)
    or ``festival`` (``(voice_name)``)."""

    engine: str
    name: str  # "mb-de1-en", "slt", "rab_diphone"
    gender: str  # "f" / "m" (from the voice's own metadata)

    @property
    def free(self) -> bool:
        return self.engine != "mbrola"

    @property
    def key(self) -> str:
        """Kaldi-safe short id, e.g. ``mbrola-de1``, ``flite-slt``, ``festival-rab``."""
        short = self.name.split("-")[1] if self.engine == "mbrola" else self.name.split("_")[0]
        return f"{self.engine}-{short}"


def _mb(db: str, gender: str, *, native: bool = False) -> SourceVoice:
    return SourceVoice("mbrola", f"mb-{db}" if native else f"mb-{db}-en", gender)


# order matters: the last voices become the dev/test-only ones (see voice_roles). The dev voice of 'us'
# (festival ked) has a train voice of its synthesiser (festival kal); without it the AID head called 73 of
# 108 ked dev utterances british (festival rab was the only festival voice in train), the rest swedish or
# scottish, none us, and their dev CER was 46.7% against 19-26% for the accents with seen synthesisers
# (recipe run lr1-qifusion-s0-accents). Every test-only voice has two train voices of its accent and
# synthesiser (us: flite slt+rms for kal16, MBROLA us1+us2 for us3), and
# German's two of its phoneme table (de2_phtrans: de1+de2 for de3; de6_phtrans, the 22 kHz databases: de5+de6
# for de7); de4 (its own table) is the dev voice. Otherwise an unseen-source speaker tests whether a
# classifier generalises across synthesisers, not accents: with MBROLA us1 the only MBROLA voice of 'us' in
# train, the accent classifiers of issue 16 called most MBROLA us2 (dev) and us3 (test) speakers british,
# german or french.
ACCENT_VOICES: dict[str, tuple[SourceVoice, ...]] = {
    "us": (SourceVoice("flite", "slt", "f"), SourceVoice("flite", "rms", "m"), _mb("us1", "f", native=True),
           _mb("us2", "m", native=True), SourceVoice("festival", "kal_diphone", "m"),
           SourceVoice("festival", "ked_diphone", "m"),
           SourceVoice("flite", "kal16", "m"), _mb("us3", "m", native=True)),
    "british": (_mb("en1", "m", native=True), SourceVoice("festival", "rab_diphone", "m")),
    "scottish": (SourceVoice("flite", "awb", "m"),),
    "german": (_mb("de1", "f"), _mb("de2", "m"), _mb("de5", "f"), _mb("de6", "m"), _mb("de4", "m"),
               _mb("de3", "f"), _mb("de7", "f")),
    "french": (_mb("fr1", "m"), _mb("fr2", "f"), _mb("fr3", "m"), _mb("fr6", "m"), _mb("fr7", "m"),
               _mb("fr4", "f"), _mb("fr5", "m")),
    "dutch": (_mb("nl2", "m"),),
    "swedish": (_mb("sw1", "m"), _mb("sw2", "f")),
    "polish": (_mb("pl1", "f"),),
    "hungarian": (_mb("hu1", "f"),),
}
# (warp, tempo) per derived speaker; dev/test values lie outside the train range [0.95, 1.05] in both
TRAIN_TRANSFORMS = ((1.0, 1.0), (0.95, 1.05), (1.05, 0.95))
DEV_TRANSFORMS = ((0.92, 0.92), (1.08, 1.08))
TEST_TRANSFORMS = ((0.9, 1.1), (1.1, 0.9))
TRANSFORMS = {"train": TRAIN_TRANSFORMS, "dev": DEV_TRANSFORMS, "test": TEST_TRANSFORMS}
LICENCES = {
    "flite": "flite and its CMU ARCTIC voices: BSD-style free licence (Debian main, package flite)",
    "festival": "festival and the festvox rab/ked/kal diphone voices: free, redistributable "
                "(Debian main festvox-kdlpc16k, festvox-kallpc16k; contrib festvox-rablpc16k)",
    "mbrola": NONFREE_LICENCE,
    "text": "sentences: WordNet 3.0 licence (wordnet-base) and fortunes (BSD; fortunes, fortunes-min)",
}
# English-reading voices espeak-ng does not ship: new voice -> (shipped -en voice with the same phoneme
# translation table, native voice whose database, gender and pitch it takes)
DERIVED_EN_VOICES = {
    **{f"mb-fr{i}-en": ("mb-fr1-en", f"mb-fr{i}") for i in (2, 3, 5, 6, 7)},
    "mb-de7-en": ("mb-de6-en", "mb-de7"),
}
FREE_APT = "flite festival festvox-rablpc16k festvox-kdlpc16k festvox-kallpc16k"


@dataclass(frozen=True)
class AccentSpeaker:
    """A derived speaker: ``source`` voice under transform ``(warp, tempo)``, used in ``split``."""

    speaker_id: str  # "german_mbrola-de5_w0.90_t1.10"
    accent: str
    source: SourceVoice
    warp: float
    tempo: float
    split: str


def accent_voices(accent: str, *, free_only: bool) -> tuple[SourceVoice, ...]:
    """The accent's source voices (only the free ones when ``free_only``)."""
    return tuple(v for v in ACCENT_VOICES[accent] if v.free or not free_only)


def voice_roles(voices: tuple[SourceVoice, ...]) -> dict[str, tuple[SourceVoice, ...]]:
    """Split -> source voices (see the module doc): train never gets a dev/test-only voice."""
    n = len(voices)
    if n == 0:
        raise ValueError("an accent needs at least one source voice")
    if n <= 2:
        return {"train": voices, "dev": voices, "test": voices}
    if n == 3:
        return {"train": voices[:-1], "dev": voices[-1:], "test": voices[-1:]}
    n_test = 2 if n >= 6 else 1
    return {"train": voices[:n - n_test - 1], "dev": (voices[n - n_test - 1],), "test": voices[n - n_test:]}


def accent_speakers(accents: list[str], *, free_only: bool) -> dict[str, list[AccentSpeaker]]:
    """Split -> derived speakers of ``accents`` (every role voice x every transform of the split)."""
    out: dict[str, list[AccentSpeaker]] = {s: [] for s in TRANSFORMS}
    for accent in accents:
        voices = accent_voices(accent, free_only=free_only)
        if not voices:
            raise UserError(f"accent '{accent}' has no free voice: use the full 'accents' preset")
        for split, role in voice_roles(voices).items():
            for v in role:
                out[split] += [_derived(accent, v, warp, tempo, split) for warp, tempo in TRANSFORMS[split]]
    return out


def _derived(accent: str, v: SourceVoice, warp: float, tempo: float, split: str) -> AccentSpeaker:
    return AccentSpeaker(f"{accent}_{v.key}_w{warp:.2f}_t{tempo:.2f}", accent, v, warp, tempo, split)


def seen_source_test_speakers(accents: list[str], *, free_only: bool) -> list[AccentSpeaker]:
    """Test speakers made from *train* voices under :data:`TEST_TRANSFORMS`, for the accents whose test
    voices are all held out of train (3+ source voices). With them every accent has test speakers of the
    same kind (a train voice under an unseen transform), so accents can be compared without comparing
    held-out voices of some accents with transformed train voices of others (issue 16: the baseline's
    majority accent was its worst only because all its test voices were held out)."""
    out: list[AccentSpeaker] = []
    for accent in accents:
        roles = voice_roles(accent_voices(accent, free_only=free_only))
        if set(roles["test"]) & set(roles["train"]):
            continue
        out += [_derived(accent, v, w, t, "test") for v in roles["train"] for w, t in TEST_TRANSFORMS]
    return out


def unseen_source(speaker: AccentSpeaker, train: list[AccentSpeaker]) -> bool:
    """True when no train speaker of the same accent shares ``speaker``'s source voice."""
    return all(t.source != speaker.source for t in train if t.accent == speaker.accent)


def mbrola_installed(db: str) -> bool:
    """Whether MBROLA database ``db`` (``de1``) is installed where espeak-ng looks."""
    return any((d / db / db).is_file() or (d / db).is_file() for d in MBROLA_DIRS)


def missing_voices(voices: set[SourceVoice]) -> tuple[list[str], list[str]]:
    """(missing free voices/programs, missing non-free ones) among ``voices`` on this system."""
    free: list[str] = []
    nonfree: list[str] = []
    engines = {v.engine for v in voices}
    if "flite" in engines and shutil.which("flite") is None:
        free.append("flite")
    if "festival" in engines and shutil.which("text2wave") is None:
        free.append("festival")
    if "mbrola" in engines and shutil.which("mbrola") is None:
        nonfree.append("mbrola")
    for v in sorted(voices, key=lambda v: v.key):
        if v.engine == "mbrola" and not mbrola_installed(v.key.split("-", 1)[1]):
            nonfree.append(v.name)
        if v.engine == "festival" and not (FESTIVAL_VOICE_DIR / v.name).is_dir():
            free.append(v.name)
    if "espeak" not in free and shutil.which("espeak-ng") is None and "mbrola" in engines:
        free.append("espeak-ng")
    return free, nonfree


def require_voices(voices: set[SourceVoice], *, preset: str) -> None:
    """Raise UserError when a voice of ``voices`` is missing: non-free ones name :data:`INSTALL_COMMAND`
    (never installed silently), free ones ``make setup`` and the apt packages."""
    free, nonfree = missing_voices(voices)
    if nonfree:
        raise UserError(
            f"preset '{preset}' needs the non-free MBROLA voices ({', '.join(nonfree)} missing; licence: "
            f"non-commercial use only). Install them with '{INSTALL_COMMAND}' (it prints what it changes: "
            f"adds Debian's contrib/non-free apt components and installs the mbrola packages), or use the "
            f"free-only preset 'accents-free'")
    if free:
        raise UserError(f"preset '{preset}' needs {', '.join(free)}: run 'make setup' or "
                        f"'sudo apt-get install {FREE_APT}' ({', '.join(CONTRIB_FREE_PACKAGES)} is in Debian "
                        f"contrib: '{INSTALL_COMMAND}' enables contrib and installs it)")


FREE_ACCENTS = tuple(a for a, vs in ACCENT_VOICES.items() if any(v.free for v in vs))


def derived_voice_text(template: str, native: str) -> str:
    """Voice file text: ``template`` (a shipped ``-en`` voice file) with its name, gender, pitch and
    mbrola lines replaced by ``native``'s (same phoneme table required). Raises UserError otherwise."""
    keys = ("name", "gender", "pitch", "mbrola")
    t_lines = template.splitlines()
    n_lines = native.splitlines()
    t_mb = next((ln.split() for ln in t_lines if ln.startswith("mbrola ")), None)
    n_mb = next((ln.split() for ln in n_lines if ln.startswith("mbrola ")), None)
    if not t_mb or not n_mb or t_mb[2] != n_mb[2]:
        raise UserError(f"cannot derive an English MBROLA voice: phoneme tables differ ({t_mb} vs {n_mb})")
    kept = [ln for ln in t_lines if ln.split()[:1] and ln.split()[0] not in keys]
    own = [ln for ln in n_lines if ln.split()[:1] and ln.split()[0] in ("gender", "pitch", "mbrola")]
    return "\n".join([f"name en-{n_mb[1]}-qifusion", *kept, *own]) + "\n"


@lru_cache(maxsize=1)
def espeak_en_data_dir() -> Path:
    """A private espeak-ng data dir (``--path``) that adds :data:`DERIVED_EN_VOICES` to the system's
    (everything else is a symlink to it). Made once per content under the temp dir; atomic."""
    from qifusion.data.voices import espeak_data_dir  # espeak-ng's own data dir

    system = espeak_data_dir()
    mb = system / "voices" / "mb"
    try:
        files = {name: derived_voice_text((mb / t).read_text(), (mb / n).read_text())
                 for name, (t, n) in sorted(DERIVED_EN_VOICES.items())}
    except OSError as e:
        raise UserError(f"cannot read espeak-ng's MBROLA voice files in {mb}: {e}") from e
    digest = hashlib.sha1(repr((str(system), sorted(files.items()))).encode()).hexdigest()[:12]
    out = Path(tempfile.gettempdir()) / f"qifusion-espeak-data-{os.getuid()}-{digest}"
    if out.is_dir():
        return out
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    for entry in system.iterdir():
        if entry.name != "voices":
            (tmp / entry.name).symlink_to(entry)
    (tmp / "voices").mkdir()
    for entry in (system / "voices").iterdir():
        (tmp / "voices" / entry.name).symlink_to(entry)
    (tmp / "voices" / "qifusion").mkdir()
    for name, text in files.items():
        (tmp / "voices" / "qifusion" / name).write_text(text)
    try:
        tmp.rename(out)
    except OSError:  # made meanwhile by another process: use that one
        shutil.rmtree(tmp, ignore_errors=True)
    return out
