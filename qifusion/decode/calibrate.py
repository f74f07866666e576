"""``qifusion calibrate``: run a model over a dev split and write its accent-ID calibration.

The statistics and the file format live in :mod:`qifusion.eval.calibration`; this module only runs the
model (the chunk-masked ``encode`` of :class:`~qifusion.models.protocol.DecodingModel`) to collect the
utterance posteriors and CTC confidences they are computed from.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from qifusion.errors import DataError
from qifusion.eval.calibration import (
    GATE_MARGIN,
    NO_AID,
    AccentView,
    AidCalibration,
    fit_calibration,
    model_fingerprint,
    save_calibration,
)


def collect_posteriors(
    model_dir: Path, data_dir: Path, *, chunk_size: int = -1, batch_size: int = 16,
    progress: bool | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor, list[str], torch.Tensor]:
    """Run the model over DEV: ((N, A) log utterance posteriors or None without an AID head, (N,) labels,
    accent names, (N,) CTC confidence of each utterance (speech gate)). Utterances without an accent
    label, or whose accent the model does not know, are left out; unreadable ones are skipped."""
    from tqdm import tqdm

    from qifusion.data.manifest import LoadReport, load_data_dir
    from qifusion.decode.backend import load_for_decoding
    from qifusion.decode.gate import SpeechEvidence
    from qifusion.decode.run import load_feature_batch

    loaded = load_for_decoding(model_dir, backend="torch", device="cpu")
    model, accents = loaded.model, loaded.accents
    ids = {a: i for i, a in enumerate(accents)}
    utts = [u for u in load_data_dir(data_dir, require_text=False, strict=False, report=LoadReport())
            if u.accent in ids]
    if not utts:
        raise DataError(f"{data_dir}: no utterance has an accent the model knows ({', '.join(accents)}); "
                        "calibration needs utt2accent")
    posts: list[torch.Tensor] = []
    labels: list[int] = []
    confs: list[float] = []
    skipped: dict[str, int] = {}
    bar = tqdm(total=len(utts), unit="utt", desc="calibrate", file=sys.stderr,
               disable=None if progress is None else not progress)
    for i in range(0, len(utts), batch_size):
        batch = utts[i : i + batch_size]
        feats, kept, _ = load_feature_batch(batch, skipped, sample_rate=loaded.config.data.sample_rate,
                                            num_mel_bins=loaded.config.data.num_mel_bins)
        bar.update(len(batch))
        if not kept:
            continue
        lens = torch.tensor([f.shape[0] for f in feats])
        x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        with torch.inference_mode():
            enc = model.encode(x, lens, chunk_size=chunk_size, left_chunks=-1)
        for j in range(len(kept)):
            ev = SpeechEvidence()
            ev.update(enc.ctc_log_probs[j, : int(enc.lens[j])], loaded.tokenizer.blank_id)
            confs.append(ev.confidence)
        if enc.accent_utt is not None:
            posts.append(enc.accent_utt.double().clamp_min(1e-30).log())
        labels += [ids[u.accent] for u in kept]
    bar.close()
    if not labels:
        raise DataError(f"{data_dir}: no utterance could be read (skipped: {skipped})")
    log_post = torch.cat(posts) if posts else None
    return log_post, torch.tensor(labels, dtype=torch.long), accents, torch.tensor(confs, dtype=torch.float64)


def calibrate_model(model_dir: Path, data_dir: Path, *, chunk_size: int = -1, batch_size: int = 16,
                    progress: bool | None = None, write: bool = True) -> AidCalibration:
    """Measure the AID of ``model_dir`` on ``data_dir``, fit the temperature, write the JSON (``write``)."""
    model_dir, data_dir = Path(model_dir), Path(data_dir)
    log_post, labels, accents, confs = collect_posteriors(model_dir, data_dir, chunk_size=chunk_size,
                                                          batch_size=batch_size, progress=progress)
    cal = (AidCalibration(status=NO_AID, accents=accents, num_utts=int(labels.numel())) if log_post is None
           else fit_calibration(log_post, labels, accents))
    p1 = float(torch.quantile(confs, 0.01))
    cal.dev_confidence_p1 = round(p1, 4)
    cal.gate_min_confidence = round(GATE_MARGIN * p1, 4)
    cal.chunk_size = chunk_size
    cal.data = str(data_dir)
    cal.model_sha256 = model_fingerprint(model_dir)
    cal.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if write:
        path = save_calibration(model_dir, cal)
        temp = f"; temperature {cal.temperature:.3g}" if cal.status != NO_AID else ""
        print(f"qifusion calibrate: {AccentView(cal).note}{temp}; speech gate confidence >= "
              f"{cal.gate_min_confidence:.3f} -> {path}", file=sys.stderr)
    return cal
