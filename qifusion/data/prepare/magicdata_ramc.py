"""MagicData-RAMC (openslr 123, ``MDT2021S003``) -> qifusion train/dev/test Kaldi dirs with segments.

Input layout (either form)::

    SRC/[MDT2021S003/]WAV/{train,dev,test}/<conv>.wav   TXT/{train,dev,test}/<conv>.txt
    SRC/[MDT2021S003/]WAV/<conv>.wav                    TXT/<conv>.txt   (flat: split by lists)
    SRC/[MDT2021S003/]SPKINFO.txt

A flat layout needs split lists ``SRC/{train,dev,test}.tsv`` (one ``<conv>.wav`` per line, as in the
corpus' baseline repository); without them conversations are split deterministically by sorted name
(~82/6/12 %, the official proportions 289/19/43), which is NOT the official partition.

Transcript lines: ``[start,end]<TAB>speaker<TAB>gender,language<TAB>text``. Each turn is one
utterance ``<speaker>_<conv>_<start ms>_<end ms>`` (Kaldi ``segments``). Accent = the speaker's
``REGION`` in ``SPKINFO.txt`` (the part before a comma, e.g. ``Sichuan``), as written there.
Skipped and counted: turns with ``[*]`` (unintelligible), turns that are only markers such as
``[LAUGHTER]``/``[MUSIC]``/``[SONANT]``/``[ENS]``/``[SYSTEM]`` or empty after normalisation, bad time
stamps, speakers missing from SPKINFO, missing/unreadable conversation audio.
"""

from __future__ import annotations

import re
from pathlib import Path

from qifusion.data.manifest import Utterance
from qifusion.data.prepare.common import SPLITS, PrepareReport, audio_duration, write_splits
from qifusion.data.prepare.text import normalize_mandarin
from qifusion.errors import DataError

TIME_RE = re.compile(r"^\[\s*([0-9.]+)\s*,\s*([0-9.]+)\s*\]$")
OFFICIAL_COUNTS = {"train": 289, "dev": 19, "test": 43}


def _root(src: Path) -> Path:
    for cand in (src, src / "MDT2021S003"):
        if (cand / "WAV").is_dir() and (cand / "TXT").is_dir():
            return cand
    raise DataError(f"{src}: not a MagicData-RAMC root (no WAV/ and TXT/ dirs, also not under MDT2021S003/)")


def read_spkinfo(path: Path) -> dict[str, str]:
    """SPKINFO.txt -> speaker id -> region (header line and blank lines ignored)."""
    if not path.is_file():
        raise DataError(f"{path}: missing (MagicData-RAMC speaker info, needed for accent labels)")
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        cols = [c.strip() for c in line.split("\t")]
        if len(cols) < 5 or cols[0].upper() == "CHANNEL" or not cols[1]:
            continue
        region = cols[4].split(",")[0].split("，")[0].strip()
        if not region:
            raise DataError(f"{path}:{n}: speaker '{cols[1]}' has an empty REGION column")
        out[cols[1]] = region.replace(" ", "_")
    if not out:
        raise DataError(f"{path}: no speaker lines (want CHANNEL SPEAKER_ID GENDER AGE REGION,CITY DEVICE)")
    return out


def _conversations(root: Path, src: Path) -> dict[str, list[tuple[str, Path, Path]]]:
    """split -> [(conv id, wav path, txt path)]."""
    out: dict[str, list[tuple[str, Path, Path]]] = {s: [] for s in SPLITS}
    if all((root / "TXT" / s).is_dir() for s in SPLITS):
        for s in SPLITS:
            for txt in sorted((root / "TXT" / s).glob("*.txt")):
                out[s].append((txt.stem, root / "WAV" / s / f"{txt.stem}.wav", txt))
        return out
    txts = sorted((root / "TXT").glob("*.txt"))
    lists = {s: src / f"{s}.tsv" for s in SPLITS}
    if all(p.is_file() for p in lists.values()):
        which = {Path(line.strip()).stem: s for s, p in lists.items() for line in p.read_text().splitlines()
                 if line.strip()}
    else:
        keys = sorted((t.stem for t in txts), key=_natural_key)
        total = sum(OFFICIAL_COUNTS.values())
        n_test = max(1, round(len(keys) * OFFICIAL_COUNTS["test"] / total))
        n_dev = max(1, round(len(keys) * OFFICIAL_COUNTS["dev"] / total))
        which = {}
        for i, k in enumerate(keys):
            which[k] = "test" if i < n_test else "dev" if i < n_test + n_dev else "train"
    for txt in txts:
        if txt.stem in which:
            out[which[txt.stem]].append((txt.stem, root / "WAV" / f"{txt.stem}.wav", txt))
    return out


def _natural_key(name: str) -> list[int | str]:
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", name)]


def prepare_magicdata_ramc(src: Path, out_dir: Path) -> PrepareReport:
    """Prepare MagicData-RAMC at ``src`` into ``out_dir/{train,dev,test}`` (segments per turn)."""
    root = _root(src)
    speakers = read_spkinfo(root / "SPKINFO.txt")
    report = PrepareReport(corpus="magicdata-ramc")
    splits: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
    cache: dict[str, float] = {}
    for split, convs in _conversations(root, src).items():
        for conv, wav, txt in convs:
            conv_dur = audio_duration(wav, conv, report, cache)
            if conv_dur is None:
                continue
            for n, line in enumerate(txt.read_text(encoding="utf-8-sig").splitlines(), 1):
                if not line.strip():
                    continue
                utt = _turn(line, conv, wav, conv_dur, speakers, report, f"{txt}:{n}")
                if utt is not None:
                    splits[split].append(utt)
    write_splits(splits, out_dir, report)
    return report


def _turn(line: str, conv: str, wav: Path, conv_dur: float, speakers: dict[str, str],
          report: PrepareReport, where: str) -> Utterance | None:
    cols = line.rstrip("\n").split("\t")
    if len(cols) < 4:
        report.skip("malformed transcript line", where)
        return None
    m = TIME_RE.match(cols[0].strip())
    if m is None:
        report.skip("bad time stamp", where)
        return None
    start, end = float(m.group(1)), float(m.group(2))
    if end <= start or start >= conv_dur:
        report.skip("bad time stamp", where)
        return None
    end = min(end, conv_dur)
    speaker, raw = cols[1].strip(), "\t".join(cols[3:])
    if "[*]" in raw:
        report.skip("unintelligible turn ([*])", where)
        return None
    text = normalize_mandarin(raw)
    if not text:
        report.skip("noise-only or empty turn", where)
        return None
    if speaker not in speakers:
        report.skip("speaker not in SPKINFO.txt", f"{where}: {speaker}")
        return None
    utt_id = f"{speaker}_{conv}_{round(start * 1000):07d}_{round(end * 1000):07d}"
    return Utterance(utt_id, str(wav.resolve()), text, speakers[speaker], speaker, start, end,
                     round(end - start, 3))
