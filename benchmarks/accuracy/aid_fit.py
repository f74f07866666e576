"""Why an AID misses: does its head fit the TRAINING utterances, and is accent visible in plain fbank stats?

    python benchmarks/accuracy/aid_fit.py NAME [NAME ...]   # evaluated runs with an AID head

For each run, on a balanced sample of training utterances and of dev utterances (``--per`` per accent,
fixed seed), the utterance accent is predicted from the model's frame posteriors in two ways: the
model's own rule (argmax of the mean frame posterior) and the same with the training prior divided out
(argmax of the mean of log p(a|x_t) - log p(a), i.e. scaled likelihoods). High training accuracy with low
dev accuracy means the head overfits the training voices; chance on both means it has not learnt accent
at all (under-fitting), and the prior-corrected rule tells whether the majority accent merely outweighs
a weak signal. A model-free reference: a linear probe on each utterance's mean and std of fbank, fitted
on training utterances and scored on dev. Writes ``benchmarks/results/accuracy_aid/NAME.json``.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe import fit_logreg
from spec import BY_NAME, CORPUS, EXP, ROOT

from qifusion.data.manifest import Utterance, load_data_dir
from qifusion.decode.run import load_feature_batch
from qifusion.fileio import atomic_write_text
from qifusion.modeldir import load_model_dir

OUT = ROOT / "benchmarks" / "results" / "accuracy_aid"
SEED = 0


def balanced(utts: list[Utterance], accents: list[str], per: int, *, seed: int = SEED) -> list[Utterance]:
    """Up to ``per`` utterances of each accent, drawn with a fixed seed."""
    by: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        by[u.accent or ""].append(u)
    rnd = random.Random(seed)
    return [u for a in accents for u in rnd.sample(by[a], min(per, len(by[a])))]


@torch.no_grad()
def frame_posteriors(model: torch.nn.Module, utts: list[Utterance], *, sample_rate: int, num_mel_bins: int,
                     batch_size: int = 16) -> tuple[list[Utterance], list[torch.Tensor], list[torch.Tensor]]:
    """Kept utterances, their frame posteriors (T', A) and their fbank mean+std vectors (2F,)."""
    kept_all, posts, stats = [], [], []
    for i in range(0, len(utts), batch_size):
        feats, kept, _ = load_feature_batch(utts[i : i + batch_size], {}, sample_rate=sample_rate,
                                            num_mel_bins=num_mel_bins)
        if not kept:
            continue
        lens = torch.tensor([f.shape[0] for f in feats])
        res = model.encode(torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lens)
        for b, f in enumerate(feats):
            posts.append(res.accent_post[b, : int(res.lens[b])].float())
            stats.append(torch.cat([f.mean(0), f.std(0)]).float())
        kept_all += kept
    return kept_all, posts, stats


def rule_accuracy(posts: list[torch.Tensor], labels: torch.Tensor, log_prior: torch.Tensor) -> dict[str, Any]:
    """Accuracy of the mean-posterior rule and of the prior-corrected rule, and what each predicts."""
    mean_post = torch.stack([p.mean(0).argmax() for p in posts])
    corrected = torch.stack([(p.clamp_min(1e-12).log() - log_prior).mean(0).argmax() for p in posts])
    return {"n": int(labels.numel()),
            "acc_mean_posterior": round(float((mean_post == labels).float().mean()), 4),
            "acc_prior_corrected": round(float((corrected == labels).float().mean()), 4),
            "distinct_predicted": int(mean_post.unique().numel()),
            "distinct_predicted_prior_corrected": int(corrected.unique().numel())}


def aid_fit(name: str, *, per: int) -> dict[str, Any]:
    """The diagnostic of one run (its averaged model ``exp/study/NAME/model``)."""
    loaded = load_model_dir(EXP / name / "model")
    model, accents, cfg = loaded.model.eval(), loaded.accents, loaded.config
    if getattr(model, "aid", None) is None:
        raise SystemExit(f"{name}: the model has no AID head")
    corpus = ROOT / CORPUS
    train_all = load_data_dir(corpus / "train")
    counts = Counter(u.accent for u in train_all)
    prior = torch.tensor([counts[a] for a in accents], dtype=torch.float)
    prior = prior / prior.sum()
    log_prior = prior.log()
    out: dict[str, Any] = {"run": name, "per_accent": per, "seed": SEED,
                           "train_prior": {a: round(float(p), 4) for a, p in zip(accents, prior)}}
    stats = {}
    for split, utts in (("train", train_all), ("dev", load_data_dir(corpus / "dev"))):
        data = cfg.data
        kept, posts, st = frame_posteriors(model, balanced(utts, accents, per), sample_rate=data.sample_rate,
                                           num_mel_bins=data.num_mel_bins)
        labels = torch.tensor([accents.index(u.accent) for u in kept])
        out[split] = rule_accuracy(posts, labels, log_prior)
        stats[split] = (torch.stack(st), labels)
    lin = fit_logreg(stats["train"][0], stats["train"][1], num_classes=len(accents))
    with torch.no_grad():
        acc = float((lin(stats["dev"][0]).argmax(-1) == stats["dev"][1]).float().mean())
    out["fbank_stats_probe_train_to_dev"] = round(acc, 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+", help="evaluated runs of spec.RUNS with an AID head")
    ap.add_argument("--per", type=int, default=25, help="utterances per accent and split (default 25)")
    args = ap.parse_args()
    for name in args.names:
        if name not in BY_NAME:
            raise SystemExit(f"unknown run {name!r}; runs: {', '.join(BY_NAME)}")
        res = aid_fit(name, per=args.per)
        OUT.mkdir(parents=True, exist_ok=True)
        atomic_write_text(OUT / f"{name}.json", json.dumps(res, indent=1) + "\n")
        print(f"{name}: train {res['train']}, dev {res['dev']}, "
              f"fbank probe {res['fbank_stats_probe_train_to_dev']}")


if __name__ == "__main__":
    main()
