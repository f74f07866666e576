"""Accent-ID calibration: measured accuracy on a dev split and a temperature for honest probabilities.

``qifusion calibrate --model M --data DEV`` (:mod:`qifusion.decode.calibrate`) runs the model's
utterance-level accent posterior
(``model.encode(...).accent_utt``, (B, A)) over every utterance of DEV that has an accent label, and
writes ``M/aid_calibration.json`` (atomically) with

* ``accuracy``: share of dev utterances whose argmax accent is the reference accent;
* ``chance``: share of the largest dev accent (what always guessing that accent scores);
* ``p_value``: one-sided exact binomial test of "accuracy is no better than chance";
* ``working``: ``p_value < ALPHA`` (the rule below), else the model has **no working accent ID**;
* ``gate_min_confidence``: the speech gate's confidence threshold for this model
  (:mod:`qifusion.decode.gate`): ``GATE_MARGIN`` x the 1st percentile of the dev utterances' CTC confidence;
* ``temperature`` T: fitted by minimising the negative log-likelihood of the dev labels under
  ``softmax(log p / T)`` (temperature scaling, Guo et al. 2017); ``ece_raw`` / ``ece_calibrated``:
  expected calibration error (15 bins) before / after.

Every output that shows an accent (``transcribe`` JSON, server messages, the web page) goes through
:meth:`AidCalibration.present`: a calibrated, working AID gives the accent with its calibrated
probability and the measured accuracy; otherwise no accent is named and a note says why.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from qifusion.errors import DataError, UserError
from qifusion.fileio import atomic_write_text

FILENAME = "aid_calibration.json"
ALPHA = 0.01  # a working AID must beat chance with one-sided binomial p < ALPHA on dev
ECE_BINS = 15
GATE_MARGIN = 0.8  # speech gate: confidence threshold = GATE_MARGIN x 1st percentile of dev confidence

# status values of the accent view
OK = "ok"
NOT_WORKING = "no_working_aid"
NOT_CALIBRATED = "not_calibrated"
NO_AID = "no_aid_head"
MISMATCH = "calibration_mismatch"


@dataclass
class AidCalibration:
    """The contents of ``aid_calibration.json`` (see the module docstring)."""

    status: str  # OK, NOT_WORKING or NO_AID
    accents: list[str]
    num_utts: int = 0
    accuracy: float | None = None
    chance: float | None = None
    p_value: float | None = None
    temperature: float = 1.0
    ece_raw: float | None = None
    ece_calibrated: float | None = None
    nll_raw: float | None = None
    nll_calibrated: float | None = None
    distinct_predicted: int = 0
    gate_min_confidence: float = 0.0  # speech gate threshold (qifusion.decode.gate)
    dev_confidence_p1: float | None = None  # 1st percentile of the dev utterances' CTC confidence
    chunk_size: int = -1
    data: str = ""
    model_sha256: str = ""
    created: str = ""

    @property
    def working(self) -> bool:
        return self.status == OK


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p) (the one-sided p-value of k successes in n)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    dist = torch.distributions.Binomial(total_count=n, probs=torch.tensor(float(p), dtype=torch.float64))
    ks = torch.arange(k, n + 1, dtype=torch.float64)
    return float(dist.log_prob(ks).logsumexp(0).exp().clamp(max=1.0))


def calibrated_probs(log_post: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(log_post / T): (N, A) log posteriors -> (N, A) calibrated probabilities."""
    return torch.softmax(log_post.double() / temperature, dim=-1)


def fit_temperature(log_post: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature T > 0 minimising the NLL of ``labels`` (N,) under softmax(``log_post`` (N, A) / T)."""
    x = log_post.double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return min(max(t, 1e-3), 1e3)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE of the top-1 confidence of ``probs`` (N, A) against ``labels`` (N,), equal-width bins."""
    conf, pred = probs.max(dim=-1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges.tolist()):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += float(m.double().mean()) * abs(float(correct[m].mean()) - float(conf[m].mean()))
    return ece


def fit_calibration(log_post: torch.Tensor, labels: torch.Tensor, accents: list[str]) -> AidCalibration:
    """Accuracy, chance, significance and temperature from dev log posteriors (N, A) and labels (N,)."""
    n = int(labels.numel())
    if n == 0:
        raise DataError("no dev utterance with a known accent label: cannot calibrate accent ID")
    pred = log_post.argmax(dim=-1)
    correct = int((pred == labels).sum())
    counts = torch.bincount(labels, minlength=len(accents))
    chance = float(counts.max()) / n
    p_value = binomial_sf(correct, n, chance)
    t = fit_temperature(log_post, labels)
    raw, cal = calibrated_probs(log_post, 1.0), calibrated_probs(log_post, t)
    nll = torch.nn.functional.nll_loss
    return AidCalibration(
        status=OK if p_value < ALPHA else NOT_WORKING, accents=list(accents), num_utts=n,
        accuracy=round(correct / n, 6), chance=round(chance, 6), p_value=float(f"{p_value:.4g}"),
        temperature=round(t, 6), ece_raw=round(expected_calibration_error(raw, labels), 6),
        ece_calibrated=round(expected_calibration_error(cal, labels), 6),
        nll_raw=round(float(nll(raw.clamp_min(1e-300).log(), labels)), 6),
        nll_calibrated=round(float(nll(cal.clamp_min(1e-300).log(), labels)), 6),
        distinct_predicted=int(pred.unique().numel()),
    )


def model_fingerprint(model_dir: Path) -> str:
    """sha256 of ``model_dir/model.pt`` ("" when there is none, e.g. an ONNX export dir)."""
    f = Path(model_dir) / "model.pt"
    if not f.is_file():
        return ""
    return hashlib.sha256(f.read_bytes()).hexdigest()


def save_calibration(model_dir: Path, cal: AidCalibration) -> Path:
    """Write ``model_dir/aid_calibration.json`` atomically; returns its path."""
    path = Path(model_dir) / FILENAME
    atomic_write_text(path, json.dumps(asdict(cal), indent=1, ensure_ascii=False) + "\n")
    return path


def load_calibration(model_dir: Path | None) -> AidCalibration | None:
    """``model_dir/aid_calibration.json`` or None when absent; a corrupt file is a UserError naming it."""
    if model_dir is None:
        return None
    path = Path(model_dir) / FILENAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        cal = AidCalibration(**data)
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise UserError(f"{path} is not a valid accent-ID calibration ({e}); rerun qifusion calibrate") from e
    return cal


class AccentView:
    """How a model's accent output is shown: built once per model dir, applied to every result."""

    def __init__(self, cal: AidCalibration | None, *, mismatch: bool = False) -> None:
        self.cal = cal
        if mismatch:
            self.status = MISMATCH
        elif cal is None:
            self.status = NOT_CALIBRATED
        else:
            self.status = cal.status

    @classmethod
    def for_model_dir(cls, model_dir: Path | None) -> AccentView:
        """The view of ``model_dir`` (its calibration, checked against its ``model.pt``)."""
        cal = load_calibration(model_dir)
        if cal is None or model_dir is None:
            return cls(cal)
        sha = model_fingerprint(Path(model_dir))
        return cls(cal, mismatch=bool(sha and cal.model_sha256 and sha != cal.model_sha256))

    @property
    def note(self) -> str:
        """One sentence for users."""
        c = self.cal
        if self.status == NOT_CALIBRATED:
            return "accent ID not calibrated (run: qifusion calibrate --model MODEL --data DEV_DIR)"
        if self.status == MISMATCH:
            return ("accent ID not calibrated: aid_calibration.json belongs to another model.pt "
                    "(rerun qifusion calibrate)")
        assert c is not None
        if self.status == NO_AID:
            return "this model has no accent ID head"
        measured = (f"dev accuracy {100 * (c.accuracy or 0):.1f}% on {c.num_utts} utterances, "
                    f"chance {100 * (c.chance or 0):.1f}%")
        if self.status == NOT_WORKING:
            return f"this model has no working accent ID ({measured}); no accent is reported"
        return f"accent ID {measured}; accent_prob is calibrated on dev"

    def summary(self) -> dict[str, Any]:
        """The ``accent_id`` object of CLI JSON lines, server messages and ``/health``."""
        c = self.cal
        return {
            "status": self.status,
            "accuracy": c.accuracy if c is not None and self.status in (OK, NOT_WORKING) else None,
            "chance": c.chance if c is not None and self.status in (OK, NOT_WORKING) else None,
            "note": self.note,
        }

    def present(self, probs: dict[str, float]) -> tuple[str | None, float | None]:
        """(accent, calibrated probability) from raw posteriors ``{accent: p}``, or (None, None) when
        the AID is not calibrated or not working (or there is no posterior)."""
        if self.status != OK or not probs or self.cal is None:
            return None, None
        names = list(probs)
        raw = torch.tensor([max(float(probs[a]), 1e-30) for a in names], dtype=torch.float64)
        cal = calibrated_probs(raw.log()[None], self.cal.temperature)[0]
        k = int(cal.argmax())
        return names[k], round(float(cal[k]), 4)
