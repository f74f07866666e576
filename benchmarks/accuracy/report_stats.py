"""Numbers of the accuracy report, computed from the per-run result JSONs of ``eval_run.py``.

A set's CER is pooled over utterances: ``100 * sum(errors) / sum(ref_chars)``; a system with several
seeds gets the mean (and sample std) of its seeds' CERs. The relative reduction ``1 - CER_q / CER_b``
gets a paired bootstrap confidence interval over test utterances (the usual percentile bootstrap for
ASR comparisons, Bisani & Ney 2004): every resample draws N utterance indices with replacement, both
systems are scored on the same draw, each pooled over its own seeds.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qifusion.errors import DataError

MAJORITY_ACCENT = "en-us"  # the benchmark preset's majority training accent; the others are "minority"
BOOTSTRAP_B = 2000
BOOTSTRAP_SEED = 0
REQUIRED = ("run", "group", "seed", "accents", "train", "sets")


def load_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Every ``NAME.json`` under ``results_dir`` (sorted by name) -> {run name: result dict}.

    A file that is not valid JSON, lacks a key of :data:`REQUIRED`, a ``sets.test`` or whose ``run`` is
    not its file name raises DataError naming the file."""
    out: dict[str, dict[str, Any]] = {}
    if not results_dir.is_dir():
        return out
    for path in sorted(results_dir.glob("*.json")):
        try:
            res = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable JSON result ({e})") from e
        if not isinstance(res, dict):
            raise DataError(f"{path}: a result must be a JSON object")
        missing = [k for k in REQUIRED if k not in res]
        if missing:
            raise DataError(f"{path}: missing key(s) {', '.join(missing)}")
        if res["run"] != path.stem:
            raise DataError(f"{path}: 'run' is {res['run']!r}, expected the file name {path.stem!r}")
        if "test" not in res["sets"]:
            raise DataError(f"{path}: no sets.test")
        try:
            _check_sets(path, res["sets"])
        except (KeyError, TypeError, AttributeError) as e:
            raise DataError(f"{path}: malformed sets ({type(e).__name__}: {e})") from e
        out[res["run"]] = res
    return out


def load_aid_fit(aid_dir: Path) -> dict[str, dict[str, Any]]:
    """``aid_fit.py``'s ``NAME.json`` files in ``aid_dir`` -> {run: result}; a bad one raises DataError."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(aid_dir.glob("*.json")) if aid_dir.is_dir() else []:
        try:
            res = json.loads(path.read_text())
            for split in ("train", "dev"):
                float(res[split]["acc_mean_posterior"]), float(res[split]["acc_prior_corrected"])
            float(res["fbank_stats_probe_train_to_dev"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: not an aid_fit.py result ({type(e).__name__}: {e})") from e
        out[path.stem] = res
    return out


def _check_sets(path: Path, sets: dict[str, Any]) -> None:
    """Every per-utterance list of every set and mode has one item per utterance id."""
    for name, s in sets.items():
        n = len(s["utts"]["ids"])
        for key in ("accent", "ref_chars"):
            if len(s["utts"][key]) != n:
                raise DataError(f"{path}: sets.{name}.utts.{key} has {len(s['utts'][key])} items, "
                                f"ids has {n}")
        for mode, m in s["modes"].items():
            for key in ("errors", "pred_accent"):
                if len(m[key]) != n:
                    raise DataError(f"{path}: sets.{name}.modes.{mode}.{key} has {len(m[key])} items, "
                                    f"utts.ids has {n}")


def subset_mask(utts: dict[str, Any], which: str) -> np.ndarray:
    """Boolean mask (N,) of a set's utterances: ``all``, ``minority`` (not the majority accent),
    ``seen:ACCENT`` (every accent but ACCENT), ``in:A,B,...`` (those accents) or one accent name."""
    acc = np.asarray(utts["accent"], dtype=object)
    if which == "all":
        return np.ones(len(acc), dtype=bool)
    if which.startswith("in:"):
        return np.isin(acc, which[3:].split(","))
    if which == "minority":
        return acc != MAJORITY_ACCENT
    if which.startswith("seen:"):
        return acc != which[5:]
    return acc == which


def errors_of(run: dict[str, Any], set_name: str, mode: str) -> np.ndarray | None:
    """Per-utterance char errors (N,) of one run's set and mode (``None`` when not decoded)."""
    s = run["sets"].get(set_name)
    if s is None or mode not in s["modes"]:
        return None
    return np.asarray(s["modes"][mode]["errors"], dtype=np.float64)


def ref_of(run: dict[str, Any], set_name: str) -> np.ndarray:
    """Reference char counts (N,) of one run's set."""
    return np.asarray(run["sets"][set_name]["utts"]["ref_chars"], dtype=np.float64)


def pooled_cer(errors: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """CER in percent pooled over utterances (optionally those of ``mask``): 100 * sum(err) / sum(ref)."""
    if mask is not None:
        errors, ref = errors[mask], ref[mask]
    total = float(ref.sum())
    if total <= 0:
        raise DataError("no reference characters in the selected utterances")
    return 100.0 * float(errors.sum()) / total


def run_cer(run: dict[str, Any], set_name: str, mode: str, which: str = "all") -> float | None:
    """Pooled CER of one run on a subset of a set; ``None`` when the set/mode/subset is missing."""
    err = errors_of(run, set_name, mode)
    if err is None:
        return None
    mask = subset_mask(run["sets"][set_name]["utts"], which)
    if not mask.any():
        return None
    return pooled_cer(err, ref_of(run, set_name), mask)


@dataclass(frozen=True)
class SeedStats:
    """Mean and sample std (``None`` for one seed) of a per-seed value."""

    values: tuple[float, ...]
    mean: float
    std: float | None


def seed_stats(values: Sequence[float | None]) -> SeedStats | None:
    """Mean/std of the non-missing values (``None`` when all are missing)."""
    vals = tuple(float(v) for v in values if v is not None)
    if not vals:
        return None
    mean = float(np.mean(vals))
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return SeedStats(vals, mean, std)


def same_utts(runs: Sequence[dict[str, Any]], set_name: str) -> list[str]:
    """The utterance ids shared by ``runs`` on ``set_name``; DataError when they differ."""
    ids = runs[0]["sets"][set_name]["utts"]["ids"]
    for r in runs[1:]:
        if r["sets"][set_name]["utts"]["ids"] != ids:
            raise DataError(f"runs {runs[0]['run']} and {r['run']} were decoded on different {set_name} "
                            "utterances; re-run eval_run.py --force on the stale one")
    return ids


@dataclass(frozen=True)
class Reduction:
    """Relative CER reduction ``1 - CER_q / CER_b`` (fraction) with its bootstrap 95% interval."""

    cer_b: float
    cer_q: float
    point: float
    lo: float
    hi: float
    seeds_b: int
    seeds_q: int

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def _seed_mean_cer(err: np.ndarray, ref_sum: np.ndarray) -> np.ndarray:
    """err: (S, ...) error sums per seed, ref_sum: (...) -> mean over seeds of 100 * err / ref (...)."""
    return (100.0 * err / ref_sum).mean(axis=0)


def bootstrap_reduction(err_b: np.ndarray, err_q: np.ndarray, ref: np.ndarray, *, b: int = BOOTSTRAP_B,
                        seed: int = BOOTSTRAP_SEED, over_seeds: bool = False) -> Reduction:
    """Paired bootstrap of the relative CER reduction of system q over system b.

    ``err_b`` (S_b, N) and ``err_q`` (S_q, N): per-seed per-utterance char errors on the same N
    utterances; ``ref`` (N,): reference chars. Each of ``b`` resamples (numpy ``default_rng(seed)``, so
    the interval is reproducible) draws N utterances with replacement; each system's CER is pooled over
    the drawn utterances per seed and averaged over its seeds. ``over_seeds``: each resample also draws
    each system's S seeds with replacement (a two-level bootstrap, so the interval holds the seed-to-seed
    spread as well as the utterances'). Returns the full-set point estimate and the 2.5/97.5 percentiles
    of the resampled reductions."""
    err_b, err_q = np.atleast_2d(err_b), np.atleast_2d(err_q)
    n = ref.shape[0]
    if err_b.shape[1] != n or err_q.shape[1] != n:
        raise DataError(f"bootstrap: error arrays {err_b.shape}, {err_q.shape} do not match {n} utterances")
    if ref.sum() <= 0:
        raise DataError("bootstrap: no reference characters")
    cer_b = float(_seed_mean_cer(err_b.sum(1), ref.sum()))
    cer_q = float(_seed_mean_cer(err_q.sum(1), ref.sum()))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(b, n))
    flat = (idx + n * np.arange(b)[:, None]).ravel()
    counts = np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)  # (B, N) draw counts
    ref_s = counts @ ref  # (B,)
    ok = ref_s > 0
    if over_seeds:  # (B, S) weights: how often each seed is drawn in a resample, over S
        wb = np.stack([np.bincount(d, minlength=err_b.shape[0]) for d in
                       rng.integers(0, err_b.shape[0], size=(b, err_b.shape[0]))]) / err_b.shape[0]
        wq = np.stack([np.bincount(d, minlength=err_q.shape[0]) for d in
                       rng.integers(0, err_q.shape[0], size=(b, err_q.shape[0]))]) / err_q.shape[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            cb = ((100.0 * (err_b @ counts.T) / ref_s) * wb.T).sum(0)[ok]  # (S, B) weighted -> (B,)
            cq = ((100.0 * (err_q @ counts.T) / ref_s) * wq.T).sum(0)[ok]
    else:
        cb = _seed_mean_cer(err_b @ counts.T, ref_s)[ok]  # (S, B) -> (B,)
        cq = _seed_mean_cer(err_q @ counts.T, ref_s)[ok]
    with np.errstate(divide="ignore", invalid="ignore"):
        red = np.where(cb > 0, 1.0 - cq / np.where(cb > 0, cb, 1.0), 0.0)
    point = 1.0 - cer_q / cer_b if cer_b > 0 else 0.0
    lo, hi = np.percentile(red, [2.5, 97.5])
    return Reduction(cer_b, cer_q, point, float(lo), float(hi), err_b.shape[0], err_q.shape[0])


def compare(base: Sequence[dict[str, Any]], qif: Sequence[dict[str, Any]], set_name: str, mode: str,
            which: str = "all", *, over_seeds: bool = False) -> Reduction | None:
    """Bootstrap reduction of ``qif`` runs over ``base`` runs on a subset of a set (``None`` if missing);
    ``over_seeds``: resample the seeds too (:func:`bootstrap_reduction`)."""
    base = [r for r in base if errors_of(r, set_name, mode) is not None]
    qif = [r for r in qif if errors_of(r, set_name, mode) is not None]
    if not base or not qif:
        return None
    same_utts([*base, *qif], set_name)
    mask = subset_mask(base[0]["sets"][set_name]["utts"], which)
    if not mask.any():
        return None
    ref = ref_of(base[0], set_name)[mask]
    eb = np.stack([errors_of(r, set_name, mode)[mask] for r in base])  # type: ignore[index]
    eq = np.stack([errors_of(r, set_name, mode)[mask] for r in qif])  # type: ignore[index]
    return bootstrap_reduction(eb, eq, ref, over_seeds=over_seeds)


def aid_accuracy(run: dict[str, Any], set_name: str, mode: str, which: str = "all") -> float | None:
    """Share of utterances (of a subset) whose predicted accent equals the reference (``None``: no AID)."""
    s = run["sets"].get(set_name)
    if s is None or mode not in s["modes"]:
        return None
    pred = s["modes"][mode].get("pred_accent") or []
    mask = subset_mask(s["utts"], which)
    pairs = [(a, p) for a, p, m in zip(s["utts"]["accent"], pred, mask) if m and p is not None]
    if not pairs:
        return None
    return sum(a == p for a, p in pairs) / len(pairs)


def confusion(runs: Sequence[dict[str, Any]], set_name: str, mode: str) -> tuple[list[str], list[list[int]]]:
    """AID confusion counts summed over ``runs``: (labels, matrix[ref][pred]); labels sorted."""
    pairs = []
    for r in runs:
        s = r["sets"][set_name]
        pred = s["modes"][mode].get("pred_accent") or []
        pairs += [(a, p) for a, p in zip(s["utts"]["accent"], pred) if p is not None]
    labels = sorted({a for a, _ in pairs} | {p for _, p in pairs})
    index = {a: i for i, a in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for a, p in pairs:
        matrix[index[a]][index[p]] += 1
    return labels, matrix


def rel_change(new: float | None, ref: float | None) -> float | None:
    """``new / ref - 1`` (fraction), ``None`` when either is missing or ``ref`` is 0."""
    if new is None or ref is None or ref == 0:
        return None
    return new / ref - 1.0
