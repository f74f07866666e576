"""Why an AID misses: does its head fit the TRAINING utterances, and is accent visible in plain fbank stats?

    python -m benchmarks.accuracy.aid_fit NAME [NAME ...]   # evaluated runs with an AID head

For each run, on a balanced sample of training utterances and of dev utterances (``--per`` per accent,
fixed seed), the utterance accent is predicted from the model's frame posteriors in two ways: the
model's own rule (argmax of the mean frame posterior) and the same with the training prior divided out
(argmax of the mean of log p(a|x_t) - log p(a), i.e. scaled likelihoods). High training accuracy with low
dev accuracy means the head overfits the training voices; chance on both means it has not learnt accent
at all (under-fitting), and the prior-corrected rule tells whether the majority accent merely outweighs
a weak signal. A model-free reference: a linear probe on each utterance's mean and std of fbank, fitted
on training utterances and scored on dev. With ``--frozen-head``, a small utterance-level head (frame
MLP, mean+std pooling, linear; x-vector style) is also trained on the FROZEN encoder's block outputs and,
as the model-free reference, on fbank frames: can accent be learnt from what the encoder computes?
Writes ``benchmarks/results/accuracy_aid/NAME.json``.
"""
from __future__ import annotations

import argparse
import json
import random
from collections import Counter, defaultdict
from typing import Any

import torch

from benchmarks.accuracy.probe import batches, encoded, fit_logreg
from benchmarks.accuracy.spec import BY_NAME, CORPUS, EXP, ROOT
from qifusion.data.manifest import Utterance, load_data_dir
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
                     ) -> tuple[list[Utterance], list[torch.Tensor], list[torch.Tensor]]:
    """Kept utterances, their frame posteriors (T', A) and their fbank mean+std vectors (2F,)."""
    kept_all, posts, stats = [], [], []
    for feats, kept, x, lens in batches(utts, sample_rate=sample_rate, num_mel_bins=num_mel_bins):
        res = model.encode(x, lens)
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


class PooledHead(torch.nn.Module):
    """Frame MLP -> mean and std over the utterance's frames -> linear: list of (T, D) -> (N, A)."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.frame = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                         torch.nn.Linear(hidden, hidden), torch.nn.ReLU())
        self.out = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(2 * hidden, num_classes))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        z = [self.frame(x) for x in xs]
        return self.out(torch.stack([torch.cat([zi.mean(0), zi.std(0)]) for zi in z]))


def block_frames(model: torch.nn.Module, utts: list[Utterance], *, sample_rate: int, num_mel_bins: int,
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[Utterance]]:
    """Per kept utterance: all encoder blocks' outputs concatenated (T', blocks*D) and its fbank (T, F)."""
    enc, fb, kept_all = [], [], []
    for feats, kept, _, _, eo in encoded(model, utts, sample_rate=sample_rate, num_mel_bins=num_mel_bins):
        hidden, n = torch.cat(eo.hidden, -1), eo.mask.sum(1)
        enc += [hidden[b, : int(n[b])].float() for b in range(len(kept))]
        fb += [f.float() for f in feats]
        kept_all += kept
    return enc, fb, kept_all


def train_head(xtr: list[torch.Tensor], ytr: torch.Tensor, xdv: list[torch.Tensor], ydv: torch.Tensor, *,
               num_classes: int, epochs: int, seed: int = SEED) -> list[list[float]]:
    """Train a :class:`PooledHead` (Adam 1e-3, batch 32) on standardised frames; [[epoch, train acc, dev
    acc], ...] every 5 epochs."""
    torch.manual_seed(seed)
    frames = torch.cat(xtr)
    mean, std = frames.mean(0), frames.std(0) + 1e-5
    xtr, xdv = [(x - mean) / std for x in xtr], [(x - mean) / std for x in xdv]
    head = PooledHead(frames.shape[1], num_classes)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-4)
    order, curve = list(range(len(xtr))), []
    for ep in range(1, epochs + 1):
        head.train()
        random.Random(seed + ep).shuffle(order)
        for i in range(0, len(order), 32):
            idx = order[i : i + 32]
            loss = torch.nn.functional.cross_entropy(head([xtr[j] for j in idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if ep % 5 == 0 or ep == epochs:
            head.eval()
            with torch.no_grad():
                acc = [float((head(x).argmax(-1) == y).float().mean()) for x, y in ((xtr, ytr), (xdv, ydv))]
            curve.append([ep, round(acc[0], 4), round(acc[1], 4)])
    return curve


def frozen_heads(model: torch.nn.Module, train: list[Utterance], dev: list[Utterance], *, accents: list[str],
                 sample_rate: int, num_mel_bins: int, epochs: int) -> dict[str, Any]:
    """Pooled heads on the frozen encoder's blocks and on fbank: {"encoder"|"fbank": {"curve": ...}}."""
    out: dict[str, Any] = {"n_train": 0, "n_dev": 0, "epochs": epochs}
    data = {}
    for split, utts in (("train", train), ("dev", dev)):
        enc, fb, kept = block_frames(model, utts, sample_rate=sample_rate, num_mel_bins=num_mel_bins)
        data[split] = (enc, fb, torch.tensor([accents.index(u.accent) for u in kept]))
        out[f"n_{split}"] = len(kept)
    for k, name in ((0, "encoder"), (1, "fbank")):
        curve = train_head(data["train"][k], data["train"][2], data["dev"][k], data["dev"][2],
                           num_classes=len(accents), epochs=epochs)
        out[name] = {"curve": curve, "final_train": curve[-1][1], "final_dev": curve[-1][2]}
    return out


def aid_fit(name: str, *, per: int, frozen_per: int = 0, epochs: int = 30) -> dict[str, Any]:
    """The diagnostic of one run (its averaged model ``exp/study/NAME/model``)."""
    loaded = load_model_dir(EXP / name / "model")
    model, accents, cfg = loaded.model.eval(), loaded.accents, loaded.config
    if getattr(model, "aid", None) is None:
        raise SystemExit(f"{name}: the model has no AID head")
    corpus, dc = ROOT / CORPUS, cfg.data
    train_all, dev_all = load_data_dir(corpus / "train"), load_data_dir(corpus / "dev")
    counts = Counter(u.accent for u in train_all)
    prior = torch.tensor([counts[a] for a in accents], dtype=torch.float)
    prior = prior / prior.sum()
    log_prior = prior.log()
    out: dict[str, Any] = {"run": name, "per_accent": per, "seed": SEED,
                           "train_prior": {a: round(float(p), 4) for a, p in zip(accents, prior)}}
    stats = {}
    for split, utts in (("train", train_all), ("dev", dev_all)):
        kept, posts, st = frame_posteriors(model, balanced(utts, accents, per), sample_rate=dc.sample_rate,
                                           num_mel_bins=dc.num_mel_bins)
        labels = torch.tensor([accents.index(u.accent) for u in kept])
        out[split] = rule_accuracy(posts, labels, log_prior)
        stats[split] = (torch.stack(st), labels)
    lin = fit_logreg(stats["train"][0], stats["train"][1], num_classes=len(accents))
    with torch.no_grad():
        acc = float((lin(stats["dev"][0]).argmax(-1) == stats["dev"][1]).float().mean())
    out["fbank_stats_probe_train_to_dev"] = round(acc, 4)
    if frozen_per > 0:
        train_s = balanced(train_all, accents, frozen_per)
        dev_s = balanced(dev_all, accents, max(1, frozen_per // 2))
        out["frozen_head"] = frozen_heads(model, train_s, dev_s, accents=accents, epochs=epochs,
                                          sample_rate=dc.sample_rate, num_mel_bins=dc.num_mel_bins)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+", help="evaluated runs of spec.RUNS with an AID head")
    ap.add_argument("--per", type=int, default=25, help="utterances per accent and split (default 25)")
    ap.add_argument("--frozen-head", type=int, default=0, metavar="N",
                    help="also train pooled heads on N train utterances per accent (dev: N/2); 0 = skip")
    ap.add_argument("--epochs", type=int, default=30, help="epochs of the frozen heads (default 30)")
    args = ap.parse_args()
    for name in args.names:
        if name not in BY_NAME:
            raise SystemExit(f"unknown run {name!r}; runs: {', '.join(BY_NAME)}")
        res = aid_fit(name, per=args.per, frozen_per=args.frozen_head, epochs=args.epochs)
        OUT.mkdir(parents=True, exist_ok=True)
        atomic_write_text(OUT / f"{name}.json", json.dumps(res, indent=1) + "\n")
        print(f"{name}: train {res['train']}, dev {res['dev']}, "
              f"fbank probe {res['fbank_stats_probe_train_to_dev']}")


if __name__ == "__main__":
    main()
