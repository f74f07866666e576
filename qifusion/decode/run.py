"""``qifusion decode``: batched decoding of a data dir with per-accent CER/WER and AID reports.

Writes into ``out_dir``: ``hyp.txt`` (``utt_id text`` per line, input order), ``results.jsonl``
(reference, hypothesis, reference/predicted accent and its posterior per utterance), ``report.json``
(:func:`qifusion.eval.report.build_report`), ``report.md``, ``cer_per_accent.png`` and, when the data
has accent labels, ``aid_confusion.png``. Unreadable/empty audio is skipped and counted.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from qifusion.decode.options import (
    DEFAULT_BEAM,
    DEFAULT_CTC_WEIGHT,
    DEFAULT_MODE,
    LM_MODES,
    DecodeOptions,
    LmOptions,
)
from qifusion.errors import DataError, UserError
from qifusion.eval.report import UttResult, build_report, render_markdown, render_table
from qifusion.fileio import atomic_write_text


def _pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def decode_dir(
    *,
    model_dir: Path,
    data_dir: Path,
    out_dir: Path,
    mode: str = DEFAULT_MODE,
    chunk_size: int = -1,
    left_chunks: int = -1,
    beam_size: int = DEFAULT_BEAM,
    batch_size: int = 16,
    backend: str = "torch",
    ctc_weight: float = DEFAULT_CTC_WEIGHT,
    reverse_weight: float | None = None,
    device: str | None = None,
    progress: bool | None = None,
    lm: Path | None = None,
    lm_options: Any = None,
    hotwords: tuple[Any, ...] | None = None,
) -> dict[str, Any]:
    """Decode every utterance of ``data_dir`` and write the report files; returns the report dict.

    ``reverse_weight`` defaults to the model config's; ``progress=None`` shows a bar on a terminal only.
    LM modes (``lm_beam``, ``lm_rescoring``): ``lm`` is the LM dir (default ``<model dir>/lm``),
    ``lm_options`` a :class:`~qifusion.decode.options.LmOptions`, ``hotwords`` bias the search.
    """
    from tqdm import tqdm

    from qifusion.data.manifest import LoadReport, load_data_dir
    from qifusion.decode.backend import load_for_decoding
    from qifusion.decode.search import search_batch

    if beam_size < 1 or batch_size < 1:
        raise UserError("--beam-size and --batch-size must be at least 1")
    options = DecodeOptions(mode=mode, beam_size=beam_size, ctc_weight=ctc_weight,
                            reverse_weight=reverse_weight or 0.0,
                            lm_options=lm_options or LmOptions(), hotwords=hotwords or None)
    if chunk_size == 0 or chunk_size < -1:
        raise UserError(f"--chunk-size must be -1 (full context) or positive, got {chunk_size}")
    dev = "cpu" if backend == "onnx" else device or _pick_device()
    loaded = load_for_decoding(model_dir, backend=backend, device=dev)
    model, tok = loaded.model, loaded.tokenizer
    if reverse_weight is None:  # the model config's
        options = replace(options, reverse_weight=loaded.config.model.reverse_weight)
    oracle = loaded.config.model.accent.oracle_accent
    lexlm, lm_info = None, None
    if mode in LM_MODES:
        lexlm, lm_info = load_lm_for(model_dir, lm, tok, options.lm_options)
    acc_ids = {a: i for i, a in enumerate(loaded.accents)}
    load_rep = LoadReport()
    utts = load_data_dir(data_dir, require_text=True, strict=False, report=load_rep)
    skipped: dict[str, int] = dict(load_rep.skipped)
    results: list[UttResult] = []
    audio_sec, compute_sec = 0.0, 0.0
    bar = tqdm(total=len(utts), unit="utt", desc="decode", file=sys.stderr,
               disable=None if progress is None else not progress)
    for i in range(0, len(utts), batch_size):
        batch = utts[i : i + batch_size]
        t0 = time.perf_counter()
        feats, kept, secs = load_feature_batch(batch, skipped, sample_rate=loaded.config.data.sample_rate,
                                        num_mel_bins=loaded.config.data.num_mel_bins)
        if kept:
            lens = torch.tensor([f.shape[0] for f in feats], device=dev)
            x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(dev)
            extra = {}
            if oracle:  # the oracle baseline is given each utterance's true accent label (-1 = unknown)
                extra["accents"] = torch.tensor([acc_ids.get(u.accent or "", -1) for u in kept], device=dev)
            with torch.inference_mode():
                enc = model.encode(x, lens, chunk_size=chunk_size, left_chunks=left_chunks, **extra)
                hyps = search_batch(model, enc, options, sos_eos_id=tok.sos_eos_id, blank_id=tok.blank_id,
                                    lm=lexlm)
            post = enc.accent_utt.float().cpu() if enc.accent_utt is not None else None
            for j, (u, h) in enumerate(zip(kept, hyps)):
                pred = prob = None
                if post is not None:
                    k = int(post[j].argmax())
                    pred, prob = loaded.accents[k], round(float(post[j, k]), 4)
                results.append(UttResult(u.utt_id, u.text or "", tok.decode(h.tokens), u.accent, pred, prob))
            audio_sec += secs
        compute_sec += time.perf_counter() - t0
        bar.update(len(batch))
    bar.close()
    if not results:
        raise DataError(f"{data_dir}: no utterance could be decoded (skipped: {skipped})")
    rtf = compute_sec / max(audio_sec, 1e-9)
    report = build_report(results, mode=mode, chunk_size=chunk_size, rtf=rtf)
    if lm_info is not None:
        report["lm"] = {**lm_info, "hotwords": len(hotwords or ())}
    _write_outputs(Path(out_dir), results, report, skipped=skipped, model_dir=model_dir, data_dir=data_dir)
    n_skip = sum(skipped.values())
    print(render_table(report))
    print(f"decode: {len(results)} utts, CER {report['cer']:.2f} %, WER {report['wer']:.2f} %, "
          f"RTF {rtf:.4f}" + (f", skipped {n_skip} ({skipped})" if n_skip else "") + f" -> {out_dir}",
          file=sys.stderr)
    return report


def load_lm_for(model_dir: Path, lm: Path | None, tokenizer: Any, options: Any) -> tuple[Any, dict[str, Any]]:
    """Load the LM (``lm`` or ``<model_dir>/lm``) and describe it for reports."""
    from dataclasses import asdict as dc_asdict

    from qifusion.decode.lm_search import LexiconLm
    from qifusion.lm.files import read_meta, resolve_lm_dir

    lm_dir = resolve_lm_dir(model_dir, lm)
    lexlm = LexiconLm(lm_dir, tokenizer, options or LmOptions())
    meta = read_meta(lm_dir)
    info = {"dir": str(lm_dir), "order": meta.get("order"), "lexicon_words": len(lexlm.lexicon),
            "sources": [x.get("path") for x in meta.get("sources", [])], **dc_asdict(lexlm.options)}
    return lexlm, info


def load_feature_batch(
    batch: list[Any], skipped: dict[str, int], *, sample_rate: int, num_mel_bins: int
) -> tuple[list[torch.Tensor], list[Any], float]:
    """Fbank (T, F) of each readable utterance; bad ones are counted in ``skipped`` by reason."""
    from qifusion.data.audio import read_audio
    from qifusion.data.features import compute_fbank

    feats, kept, secs = [], [], 0.0
    for u in batch:
        try:
            samples = read_audio(u.audio, start=u.start, end=u.end, target_sr=sample_rate, utt_id=u.utt_id)
            f = compute_fbank(samples, sample_rate=sample_rate, num_mel_bins=num_mel_bins)
            if f.shape[0] < 8:
                raise DataError(f"utterance '{u.utt_id}': too short ({samples.size / sample_rate:.3f} s)")
        except DataError as e:
            reason = "too short" if "too short" in str(e) else "unreadable or empty audio"
            skipped[reason] = skipped.get(reason, 0) + 1
            print(f"decode: skipping {e}", file=sys.stderr)
            continue
        feats.append(f)
        kept.append(u)
        secs += samples.size / sample_rate
    return feats, kept, secs


def _write_outputs(
    out: Path, results: list[UttResult], report: dict[str, Any], *, skipped: dict[str, int],
    model_dir: Path, data_dir: Path,
) -> None:
    from qifusion.eval.plots import plot_aid_confusion, plot_per_accent_cer

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "hyp.txt", "".join(f"{r.utt_id} {r.hyp}".rstrip() + "\n" for r in results))
    atomic_write_text(out / "results.jsonl",
                      "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in results))
    atomic_write_text(out / "report.json", json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    extra = {"model": str(model_dir), "data": str(data_dir),
             "skipped": ", ".join(f"{n} {r}" for r, n in sorted(skipped.items())) or "none"}
    if "lm" in report:
        lmr = report["lm"]
        extra["lm"] = (f"{lmr['dir']} (order {lmr['order']}, {lmr['lexicon_words']} words, lm_weight "
                       f"{lmr['lm_weight']}, word_score {lmr['word_score']}, beam {lmr['beam_size']}, "
                       f"hotwords {lmr['hotwords']})")
    atomic_write_text(out / "report.md", render_markdown(report, extra=extra))
    plot_per_accent_cer(report, out / "cer_per_accent.png")
    if report["aid_confusion"] is not None:
        plot_aid_confusion(report, out / "aid_confusion.png")
