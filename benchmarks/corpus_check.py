"""Does a corpus have accents you can hear? Two measurements on a ``qifusion synth`` corpus dir (issue 16).

1. **Identifiable**: the x-vector classifier of :mod:`benchmarks.corpus_aid`, trained on ``train``
   (all of it, or at most ``--train-per-accent`` utterances per accent), the model kept chosen on
   ``dev`` alone (accuracy on all dev speakers, every one unseen in train; ``--select-on unseen-source``:
   on the dev speakers whose source voice is unseen in train, the rule before 2026-12-05 16:00, which
   became a noisy proxy when the ``accents`` preset's held-out voices were re-assigned: there the dev
   voices ``ked`` and ``de4`` are of a synthesiser or phoneme table no train voice of their accent
   has, unlike the test voices, and that dev subset's accuracy moved 32-67% between epochs), scored
   once on ``test``: accuracy over all test speakers (all unseen in train) and,
   as the headline, over the test speakers whose *source voice* is unseen in train (``speakers.json``
   of an ``accents`` corpus; for the espeak presets a speaker's source is its espeak-ng variant).
   ``--encoder MODEL_DIR``: the same classifier on *bottleneck features*, the outputs of one encoder
   block of an ASR model trained on this corpus's train split (e.g. the baseline of item 3), as x-vector
   language ID does on ASR bottlenecks (Snyder et al. 2018); one classifier per block of
   ``--encoder-blocks`` within ``--max-minutes`` in all, the block kept chosen on dev. ``--fuse`` adds the
   fbank classifier (half the minutes) and decides by the weighted sum of the two kept classifiers' log
   posteriors, the weight chosen on dev (score fusion, as language-ID systems fuse their subsystems).
2. **Hurts a recogniser**: pocketsphinx's US-English model (PyPI ``pocketsphinx``, extra ``corpus``)
   WER per accent on ``--asr-per-accent`` test utterances per accent and speaker kind (first in id order;
   kinds: train voices under test transforms, which every accent has, and held-out voices). It does not
   depend on the classifier: ``--keep-asr`` copies it from the existing ``--out`` JSON of the same corpus
   (``--keep-from JSON``: from another one).
3. **Hurts a baseline** (``--baseline MODEL_DIR``, a model trained on this corpus, e.g. the timed run
   ``exp/recipe/v5-baseline-s0-accents/final``): its test CER per accent and speaker kind (attention
   rescoring, full context), the worst accent's CER over the majority accent's (the accent with most train
   utterances) on the train-voice kind, and pocketsphinx's WER ratio of the same two accents and rank
   correlation over all accents on that kind. Over all test speakers the comparison is confounded: the
   accents with 3+ source voices have held-out test voices, the others cannot (``accents`` corpora made
   after 2026-12-05 18:30 give those accents train-voice twins of every held-out test sentence).
   ``--keep-aid`` copies the classifier section from the existing ``--out`` JSON (or ``--keep-from``), as
   ``--keep-asr`` does.

```bash
OMP_NUM_THREADS=1 taskset -c 1 python -m benchmarks.corpus_check data/accents \
    --out benchmarks/results/corpus/accents.json
OMP_NUM_THREADS=1 taskset -c 1 python -m benchmarks.corpus_check data/accents --no-asr \
    --encoder exp/recipe/v5-baseline-s0-accents/final --out benchmarks/results/corpus/accents_bottleneck.json
```
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.corpus_aid import (
    AidConfig,
    accuracy,
    encoder_features,
    fuse_weight,
    log_posteriors,
    predict,
    train_classifier,
    utterance_features,
)
from qifusion.data.manifest import Utterance, load_data_dir
from qifusion.data.synth_accents import load_speakers
from qifusion.eval.metrics import ErrorCounts, cer_counts, wer_counts
from qifusion.fileio import atomic_write_text


def source_of(utt: Utterance, table: dict[str, dict[str, Any]]) -> str:
    """Source voice of ``utt``'s speaker: ``speakers.json``'s, else the part after ``{accent}_``."""
    if utt.speaker in table:
        return table[utt.speaker]["source"]
    prefix = f"{utt.accent}_"
    return utt.speaker[len(prefix):] if utt.speaker.startswith(prefix) else utt.speaker


def take_per_accent(utts: list[Utterance], n: int | None, seed: int) -> list[Utterance]:
    """At most ``n`` utterances per accent, drawn with ``seed`` (all when ``n`` is None), id order."""
    if n is None:
        return sorted(utts, key=lambda u: u.utt_id)
    rng = np.random.default_rng(seed)
    by: dict[str, list[Utterance]] = defaultdict(list)
    for u in sorted(utts, key=lambda u: u.utt_id):
        by[u.accent].append(u)
    out = []
    for accent in sorted(by):
        part = by[accent]
        idx = sorted(rng.choice(len(part), size=min(n, len(part)), replace=False))
        out += [part[i] for i in idx]
    return out


def unseen_source_indices(utts: list[Utterance], train: list[Utterance],
                          table: dict[str, dict[str, Any]]) -> list[int]:
    """Indices of ``utts`` whose (accent, source voice) pair does not occur in ``train``."""
    seen = {(u.accent, source_of(u, table)) for u in train}
    return [i for i, u in enumerate(utts) if (u.accent, source_of(u, table)) not in seen]


FBANK = 0  # the candidate key of the fbank classifier (encoder blocks are 1-based)


def identifiability(corpus: Path, *, train_per_accent: int | None, config: AidConfig, max_minutes: float,
                    seed: int, select_on: str = "all", encoder: Path | None = None,
                    blocks: list[int] | None = None, fuse: bool = False) -> dict[str, Any]:
    """Train the classifier (model selection on dev only) and score it on test (see the module doc).
    ``encoder``: classify the outputs of a trained ASR model's encoder blocks instead of fbank, one
    classifier per block of ``blocks``, the block kept chosen on dev. ``fuse`` (with ``encoder``): also
    the fbank classifier, and the decision is the weighted sum of the two kept classifiers' log posteriors,
    the weight chosen on dev (:func:`fuse_weight`). All classifiers share ``max_minutes`` (with ``fuse``
    the fbank one gets half)."""
    table = load_speakers(corpus)
    splits = {s: load_data_dir(corpus / s) for s in ("train", "dev", "test")}
    train = take_per_accent(splits["train"], train_per_accent, seed)
    accents = sorted({u.accent for u in splits["train"]})
    index = {a: i for i, a in enumerate(accents)}
    named = (("train", train), ("dev", splits["dev"]), ("test", splits["test"]))
    t0 = time.time()
    inputs: dict[int, dict[str, list[torch.Tensor]]] = {}
    configs: dict[int, AidConfig] = {}
    budgets: dict[int, float] = {}
    fuse = fuse and encoder is not None
    minutes = max_minutes / 2 if fuse else max_minutes  # for the fbank classifier; the same for the blocks
    described = f"x-vector TDNN on 80-dim fbank, {config.pooling} pooling (benchmarks/corpus_aid.py)"
    if encoder is None or fuse:
        inputs[FBANK] = {name: [utterance_features(u.audio) for u in utts] for name, utts in named}
        configs[FBANK], budgets[FBANK] = config, minutes
    if encoder is not None:
        blocks = blocks or [1]
        by_split = {name: encoder_features(encoder, [u.audio for u in utts], blocks) for name, utts in named}
        enc_config = replace(config, warp=1.0, cepstra=0, crop_frames=max(8, config.crop_frames // 4))
        for b in blocks:
            inputs[b] = {name: by_split[name][b] for name, _ in named}
            configs[b], budgets[b] = enc_config, minutes / len(blocks)
        described = (f"x-vector TDNN, {config.pooling} pooling, on the outputs of one encoder block of "
                     f"the ASR model {encoder} (bottleneck features; benchmarks/corpus_aid.py)")
        if fuse:
            described = f"score fusion (weight chosen on dev) of an {described} and an x-vector TDNN on fbank"
    feat_min = (time.time() - t0) / 60
    labels = {name: [index[u.accent] for u in utts] for name, utts in named}
    dev_focus = (unseen_source_indices(splits["dev"], splits["train"], table) or None
                 if select_on == "unseen-source" else None)
    tried: dict[int, Any] = {}
    for k, feats in inputs.items():
        tried[k] = train_classifier(feats["train"], labels["train"], feats["dev"], labels["dev"],
                                    num_classes=len(accents), config=configs[k], dev_focus=dev_focus,
                                    max_minutes=budgets[k], seed=seed)

    block = max((k for k in tried if k != FBANK), key=lambda b: tried[b].kept_dev) if encoder else FBANK
    res, feats = tried[block], inputs[block]
    fusion = None
    if fuse:
        lp = {k: {s: log_posteriors(tried[k].model, inputs[k][s]) for s in ("dev", "test")}
              for k in (FBANK, block)}
        w, dev_focus_acc, dev_acc = fuse_weight(lp[FBANK]["dev"], lp[block]["dev"], labels["dev"], dev_focus)
        pred = (w * lp[block]["test"] + (1 - w) * lp[FBANK]["test"]).argmax(dim=1).tolist()
        parts = {k: lp[k]["test"].argmax(dim=1).tolist() for k in (FBANK, block)}
        fusion = {"weight_encoder": w, "dev_acc": dev_acc, "dev_acc_unseen_source": dev_focus_acc,
                  "dev_acc_fbank": tried[FBANK].kept_dev[1], "dev_acc_encoder": res.kept_dev[1]}
    else:
        pred = predict(res.model, feats["test"])
    test = splits["test"]
    sel = unseen_source_indices(test, splits["train"], table)
    unseen = set(sel)

    def acc(idx: list[int], p: list[int] | None = None) -> float | None:
        p = pred if p is None else p
        return round(accuracy([p[i] for i in idx], [labels["test"][i] for i in idx]), 4) if idx else None

    if fusion is not None:
        for name, k in (("fbank", FBANK), ("encoder", block)):
            fusion[f"test_acc_{name}"] = acc(list(range(len(test))), parts[k])
            fusion[f"test_acc_unseen_source_{name}"] = acc(sel, parts[k])

    per_accent: dict[str, dict[str, Any]] = {}
    for a in accents:
        idx = [i for i, u in enumerate(test) if u.accent == a]
        idx_unseen = [i for i in idx if i in unseen]
        per_accent[a] = {"n": len(idx), "acc": acc(idx), "n_unseen_source": len(idx_unseen),
                         "acc_unseen_source": acc(idx_unseen),
                         "predicted": dict(Counter(accents[pred[i]] for i in idx).most_common())}
    per_speaker = {}
    for spk in sorted({u.speaker for u in test}):
        idx = [i for i, u in enumerate(test) if u.speaker == spk]
        per_speaker[spk] = {"accent": test[idx[0]].accent, "source": source_of(test[idx[0]], table),
                            "unseen_source": idx[0] in unseen, "n": len(idx), "acc": acc(idx)}
    return {
        "classifier": described, "config": asdict(configs[block]),
        "encoder": str(encoder) if encoder is not None else None,
        "encoder_block": block if encoder is not None else None,
        "dev_acc_by_block": ({b: r.kept_dev[1] for b, r in tried.items() if b != FBANK}
                             if encoder is not None else None),
        "fusion": fusion,
        "accents": accents, "chance": round(1 / len(accents), 4),
        "train_utts": len(train), "dev_utts": len(splits["dev"]), "test_utts": len(test),
        "selected_on": "dev, unseen-source speakers" if dev_focus else "dev, all speakers",
        "dev_selection_speakers": sorted({splits["dev"][i].speaker for i in dev_focus or []}),
        "epochs_run": len(res.dev_acc), "kept_by_dev": res.kept, "steps": res.steps,
        "dev_acc_by_epoch": res.dev_acc, "dev_acc_unseen_source_by_epoch": res.dev_focus_acc,
        "dev_acc_avg_last": res.avg_dev_acc, "dev_acc_unseen_source_avg_last": res.avg_dev_focus_acc,
        "train_minutes": round(sum(r.minutes for r in tried.values()), 2),
        "feature_minutes": round(feat_min, 2),
        "params": sum(p.numel() for p in res.model.parameters()),
        "test_acc": acc(list(range(len(test)))), "test_acc_unseen_source": acc(sel),
        "test_utts_unseen_source": len(sel),
        "accents_with_unseen_source": sorted({test[i].accent for i in sel}),
        "per_accent": per_accent, "per_speaker": per_speaker,
    }


def _pocketsphinx_decoder() -> Any:
    """pocketsphinx's ``Decoder`` class, or SystemExit naming the install command."""
    try:
        from pocketsphinx import Decoder
    except ImportError as e:
        raise SystemExit("pocketsphinx is not installed: pip install 'qifusion[corpus]' "
                         "(or run with --no-asr)") from e
    return Decoder


KINDS = {False: "train_voice", True: "held_out"}


def speaker_kinds(test: list[Utterance], train: list[Utterance],
                  table: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each test utterance's speaker kind: ``held_out`` (source voice unseen in train) or ``train_voice``
    (a train voice under a test transform, or an espeak variant used in train)."""
    held = set(unseen_source_indices(test, train, table))
    return {u.utt_id: KINDS[i in held] for i, u in enumerate(test)}


def pocketsphinx_wer(corpus: Path, *, per_accent: int) -> dict[str, Any]:
    """WER (%) per accent of pocketsphinx's default US-English model on the first ``per_accent`` test
    utterances (id order) of each accent and speaker kind (:func:`speaker_kinds`): ``per_accent`` over the
    train-voice kind (every accent has it), ``per_accent_held_out`` over held-out voices."""
    Decoder = _pocketsphinx_decoder()
    import soundfile as sf

    decoder = Decoder(samprate=16000, loglevel="FATAL")
    test = load_data_dir(corpus / "test")
    kinds = speaker_kinds(test, load_data_dir(corpus / "train"), load_speakers(corpus))
    by: dict[tuple[str, str], list[Utterance]] = defaultdict(list)
    for u in sorted(test, key=lambda u: u.utt_id):
        if len(by[kinds[u.utt_id], u.accent]) < per_accent:
            by[kinds[u.utt_id], u.accent].append(u)
    out: dict[str, Any] = {"per_accent": {}, "per_accent_held_out": {}}
    t0 = time.time()
    for kind, accent in sorted(by):
        total = ErrorCounts(0, 0, 0, 0)
        for u in by[kind, accent]:
            pcm, sr = sf.read(u.audio, dtype="int16")
            if sr != 16000:
                raise SystemExit(f"{u.audio}: {sr} Hz, pocketsphinx check needs 16 kHz")
            decoder.start_utt()
            decoder.process_raw(pcm.tobytes(), full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
            total = total + wer_counts(u.text, hyp.hypstr if hyp is not None else "")
        key = "per_accent" if kind == "train_voice" else "per_accent_held_out"
        n = len(by[kind, accent])
        out[key][accent] = {"utts": n, "words": total.ref_len, "wer": round(total.rate, 2)}
    return {"recogniser": "pocketsphinx default en-us acoustic model + LM", **out,
            "minutes": round((time.time() - t0) / 60, 2)}


def previous_section(path: Path, corpus: Path, key: str, flag: str) -> dict[str, Any]:
    """Section ``key`` of the corpus-check JSON ``path``, which must be of ``corpus`` (``flag``: the option
    that asked for it, for the error)."""
    if not path.is_file():
        raise SystemExit(f"{flag}: {path} does not exist (run once without {flag})")
    old = json.loads(path.read_text())
    if key not in old:
        raise SystemExit(f"{flag}: {path} has no '{key}' section")
    if Path(old.get("corpus", "")).resolve() != corpus.resolve():
        raise SystemExit(f"{flag}: {path} is of corpus {old.get('corpus')!r}, not {str(corpus)!r}")
    return {**old[key], "kept_from": old[key].get("kept_from", old.get("command"))}


def _ranks(xs: list[float]) -> np.ndarray:
    return np.argsort(np.argsort(np.asarray(xs))).astype(float)


def cer_by_kind(results: list[dict[str, Any]], kinds: dict[str, str]) -> dict[str, dict[str, float]]:
    """Kind -> accent -> CER (%) over ``results`` rows (``utt_id``, ``accent``, ``ref``, ``hyp``)."""
    tot: dict[tuple[str, str], ErrorCounts] = defaultdict(lambda: ErrorCounts(0, 0, 0, 0))
    for r in results:
        key = (kinds[r["utt_id"]], r["accent"])
        tot[key] = tot[key] + cer_counts(r["ref"], r["hyp"])
    out: dict[str, dict[str, float]] = {k: {} for k in KINDS.values()}
    for (kind, accent), c in sorted(tot.items()):
        out[kind][accent] = round(c.rate, 2)
    return out


def baseline_hurt(corpus: Path, model_dir: Path, asr: dict[str, Any] | None) -> dict[str, Any]:
    """Test CER per accent of ``model_dir`` (attention rescoring, full context; decode written under
    ``model_dir/../corpus_check_test``), worst accent / majority accent, and pocketsphinx's view of them.

    The headline compares accents on speakers of one kind, train voices under test transforms, which every
    accent has (``per_accent_cer_train_voice``): over all test speakers an accent with held-out voices is
    harder for a reason that is not its accent (``worst_over_majority_all_speakers``)."""
    from qifusion.decode.run import decode_dir

    train = load_data_dir(corpus / "train")
    majority = Counter(u.accent for u in train).most_common(1)[0][0]
    out_dir = model_dir.parent / "corpus_check_test"
    rep = decode_dir(model_dir=model_dir, data_dir=corpus / "test", mode="attention_rescoring",
                     out_dir=out_dir, progress=False)
    kinds = speaker_kinds(load_data_dir(corpus / "test"), train, load_speakers(corpus))
    rows = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines() if line.strip()]
    by_kind = cer_by_kind(rows, kinds)
    cer_all = {a: round(v["cer"], 2) for a, v in sorted(rep["per_accent"].items())}
    cer = by_kind["train_voice"]
    worst = max(cer, key=lambda a: cer[a])
    worst_all = max(cer_all, key=lambda a: cer_all[a])
    out: dict[str, Any] = {"model": str(model_dir), "split": "test", "mode": "attention_rescoring",
                           "cer": round(rep["cer"], 2), "majority": majority,
                           "per_accent_cer_train_voice": cer, "worst": worst,
                           "worst_over_majority": round(cer[worst] / cer[majority], 3),
                           "per_accent_cer_held_out": by_kind["held_out"],
                           "per_accent_cer": cer_all, "worst_all_speakers": worst_all,
                           "worst_over_majority_all_speakers": round(cer_all[worst_all] / cer_all[majority],
                                                                     3)}
    wer = (asr or {}).get("per_accent", {})
    if worst in wer and majority in wer:
        out["pocketsphinx_worst_over_majority"] = round(wer[worst]["wer"] / wer[majority]["wer"], 3)
        common = sorted(set(cer) & set(wer))
        r = np.corrcoef(_ranks([cer[a] for a in common]), _ranks([wer[a]["wer"] for a in common]))[0, 1]
        out["spearman_with_pocketsphinx"] = round(float(r), 3)
    return out


def _blocks(encoder: Path | None, spec: str) -> list[int] | None:
    """``--encoder-blocks`` -> block numbers (every block of the model when empty); None without encoder."""
    if encoder is None:
        return None
    if spec:
        return [int(b) for b in spec.split(",")]
    from qifusion.modeldir import load_config_file

    return list(range(1, load_config_file(encoder / "config.yaml").model.encoder.num_blocks + 1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path, help="a qifusion synth corpus dir (train/ dev/ test/)")
    ap.add_argument("--out", type=Path, required=True, help="JSON to write")
    ap.add_argument("--train-per-accent", type=int, default=None,
                    help="classifier train utts per accent (default: all of train)")
    ap.add_argument("--epochs", type=int, default=AidConfig.epochs)
    ap.add_argument("--max-minutes", type=float, default=25.0, help="classifier training budget")
    ap.add_argument("--asr-per-accent", type=int, default=30, help="pocketsphinx test utts per accent")
    ap.add_argument("--no-asr", action="store_true", help="skip the pocketsphinx WER")
    ap.add_argument("--keep-asr", action="store_true",
                    help="copy the pocketsphinx section of the existing --out JSON (same corpus) "
                         "instead of re-running it")
    ap.add_argument("--no-aid", action="store_true", help="skip the classifier")
    ap.add_argument("--keep-aid", action="store_true",
                    help="copy the classifier section of the existing --out JSON (same corpus)")
    ap.add_argument("--keep-from", type=Path, default=None, metavar="JSON",
                    help="the corpus-check JSON (same corpus) that --keep-aid and --keep-asr copy from "
                         "(default: the existing --out)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="model dir of a baseline trained on this corpus: its test CER per accent")
    ap.add_argument("--encoder", type=Path, default=None,
                    help="classify encoder block outputs of this ASR model dir (trained on this corpus's "
                         "train split) instead of fbank")
    ap.add_argument("--encoder-blocks", default="",
                    help="comma-separated 1-based blocks to try with --encoder (kept by dev; default: all)")
    ap.add_argument("--fuse", action="store_true",
                    help="with --encoder: also the fbank classifier; fuse the two (weight chosen on dev)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--select-on", choices=("all", "unseen-source"), default="all",
                    help="dev utterances whose accuracy picks the classifier kept (see the module doc)")
    args = ap.parse_args(argv)
    if args.keep_from is not None and not (args.keep_aid or args.keep_asr):
        ap.error("--keep-from needs --keep-aid or --keep-asr")
    keep_from = args.keep_from or args.out
    torch.set_num_threads(1)
    if not (args.no_asr or args.keep_asr):
        _pocketsphinx_decoder()  # before the classifier's minutes, not after them
    for split in ("train", "dev", "test"):
        if not (args.corpus / split).is_dir():
            raise SystemExit(f"{args.corpus / split} is missing: not a qifusion synth corpus dir")
    summary_path = args.corpus / "synth_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    result: dict[str, Any] = {"corpus": str(args.corpus), "preset": summary.get("preset"),
                              "seed": summary.get("seed"), "command": " ".join(sys.argv)}
    if args.keep_aid:
        result["identifiability"] = previous_section(keep_from, args.corpus, "identifiability", "--keep-aid")
    elif not args.no_aid:
        result["identifiability"] = identifiability(args.corpus, train_per_accent=args.train_per_accent,
                                                    config=replace(AidConfig(), epochs=args.epochs),
                                                    max_minutes=args.max_minutes, seed=args.seed,
                                                    select_on=args.select_on, encoder=args.encoder,
                                                    blocks=_blocks(args.encoder, args.encoder_blocks),
                                                    fuse=args.fuse)
    if args.keep_asr:
        result["pocketsphinx"] = previous_section(keep_from, args.corpus, "pocketsphinx", "--keep-asr")
    elif not args.no_asr:
        result["pocketsphinx"] = pocketsphinx_wer(args.corpus, per_accent=args.asr_per_accent)
    if args.baseline is not None:
        result["baseline"] = baseline_hurt(args.corpus, args.baseline, result.get("pocketsphinx"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    ident = result.get("identifiability", {})
    hurt = result.get("baseline", {})
    print(f"{args.out}: test acc {ident.get('test_acc')}, "
          f"unseen-source {ident.get('test_acc_unseen_source')}, "
          f"baseline worst/majority {hurt.get('worst_over_majority')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
