"""Does a model's accent ID recognise the accent or the voice? (issue 17)

    python -m benchmarks.aid_sources exp/recipe/v3-qifusion-s0-accents \\
        --data data/accents --per-accent 150 --out benchmarks/results/aid_sources/v3-qifusion-s0-accents.json

For a corpus with ``speakers.json`` (the ``accents`` preset), dev speakers are split by whether their
*source voice* was heard in training (derived speakers of a training voice) or not. Two measurements:

* ``head``: the model's own AID decision, read from a finished dev decode (``RUN/dev_attention_rescoring/
  results.jsonl``, made by ``benchmarks.recipe eval``): accuracy on seen- and unseen-source speakers and
  what each dev speaker was called;
* ``probe``: a linear probe (multinomial logistic regression, :func:`benchmarks.accuracy.probe.fit_logreg`)
  on pooled statistics of every encoder block (mean, std, mean+std over valid frames) and of the fbank,
  fitted on ``per_accent`` training utterances of each accent and scored on dev the same way. The std
  alone ignores each utterance's mean, the stationary part of a voice.

Dev only; the test split is never read. Needs the corpus's ``train`` and ``dev`` dirs.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch

from benchmarks.accuracy.probe import encoded, fit_logreg, masked_mean
from qifusion.data.manifest import Utterance, load_data_dir
from qifusion.data.synth_accents import load_speakers
from qifusion.fileio import atomic_write_text


def speaker_of(utt_id: str) -> str:
    """The synth corpora's utterance ids are ``SPEAKER-NNNNNN``."""
    return utt_id.rsplit("-", 1)[0]


def head_by_source(results: Path, speakers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """AID accuracy of a decode's ``results.jsonl`` on seen- / unseen-source speakers, and per speaker
    the counts of predicted accents. A row without a prediction counts as wrong."""
    per: dict[str, Counter[str]] = defaultdict(Counter)
    truth: dict[str, str] = {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        spk = speaker_of(r["utt_id"])
        if spk not in speakers:
            raise KeyError(f"{results}: speaker '{spk}' of {r['utt_id']} is not in speakers.json")
        per[spk][str(r.get("pred_accent"))] += 1
        truth[spk] = r["accent"]
    out: dict[str, Any] = {"per_speaker": {}}
    for group, unseen in (("seen_source", False), ("unseen_source", True)):
        spks = [s for s in per if bool(speakers[s]["unseen_source"]) == unseen]
        n = sum(sum(per[s].values()) for s in spks)
        ok = sum(per[s][truth[s]] for s in spks)
        out[group] = {"utterances": n, "accuracy": round(ok / n, 4) if n else None}
    for s in sorted(per):
        out["per_speaker"][s] = {"accent": truth[s], "unseen_source": bool(speakers[s]["unseen_source"]),
                                 "predicted": dict(per[s].most_common())}
    return out


def pooled_stats(model: torch.nn.Module, utts: list[Utterance], *, sample_rate: int, num_mel_bins: int,
                 accents: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[str]]:
    """Per utterance: ``blockB_{mean,std,meanstd}`` of every encoder block (N, D or 2D) and
    ``fbank_{mean,std,meanstd}`` (N, F or 2F); accent ids (N,); speaker ids."""
    feats: dict[str, list[torch.Tensor]] = defaultdict(list)
    labels: list[int] = []
    spks: list[str] = []

    def add(name: str, h: torch.Tensor, m: torch.Tensor) -> None:  # h (B,T,D), m (B,T,1)
        mu = masked_mean(h, m)
        sd = masked_mean((h - mu[:, None]) ** 2, m).sqrt()
        feats[f"{name}_mean"].append(mu)
        feats[f"{name}_std"].append(sd)
        feats[f"{name}_meanstd"].append(torch.cat([mu, sd], 1))

    for _, kept, x, lens, eo in encoded(model, utts, sample_rate=sample_rate, num_mel_bins=num_mel_bins):
        m = eo.mask.unsqueeze(-1).to(x.dtype)
        for b, h in enumerate(eo.hidden):
            add(f"block{b + 1}", h, m)
        add("fbank", x, (torch.arange(x.shape[1])[None] < lens[:, None]).unsqueeze(-1).to(x.dtype))
        labels += [accents.index(u.accent) for u in kept]
        spks += [u.speaker or speaker_of(u.utt_id) for u in kept]
    return {k: torch.cat(v).float() for k, v in feats.items()}, torch.tensor(labels), spks


def probe(model_dir: Path, corpus: Path, speakers: dict[str, dict[str, Any]], *, per_accent: int,
          seed: int = 0) -> dict[str, Any]:
    """Linear probes of pooled statistics, fitted on ``per_accent`` random training utterances of each
    accent, scored on dev: {feature: {"all", "seen_source", "unseen_source"}} accuracies."""
    from qifusion.modeldir import load_model_dir

    lm = load_model_dir(model_dir)
    accents = list(lm.accents)
    train = [u for u in load_data_dir(corpus / "train") if u.accent in accents]
    random.Random(seed).shuffle(train)
    taken: Counter[str] = Counter()
    subset = []
    for u in train:
        if taken[u.accent] < per_accent:
            subset.append(u)
            taken[u.accent] += 1
    dev = [u for u in load_data_dir(corpus / "dev") if u.accent in accents]
    kw = {"sample_rate": lm.config.data.sample_rate, "num_mel_bins": lm.config.data.num_mel_bins,
          "accents": accents}
    xtr, ytr, _ = pooled_stats(lm.model, subset, **kw)
    xdv, ydv, sdv = pooled_stats(lm.model, dev, **kw)
    unseen = torch.tensor([bool(speakers[s]["unseen_source"]) for s in sdv])
    out: dict[str, Any] = {}
    for name in xtr:
        lin = fit_logreg(xtr[name], ytr, num_classes=len(accents))
        with torch.no_grad():
            ok = (lin(xdv[name]).argmax(-1) == ydv).float()
        out[name] = {"all": round(float(ok.mean()), 4), "seen_source": round(float(ok[~unseen].mean()), 4),
                     "unseen_source": round(float(ok[unseen].mean()), 4) if unseen.any() else None}
    return {"per_accent": per_accent, "n_train": int(ytr.numel()), "n_dev": int(ydv.numel()),
            "features": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished run dir (final/ and dev_attention_rescoring/)")
    ap.add_argument("--data", type=Path, required=True, help="the corpus dir (train/, dev/, speakers.json)")
    ap.add_argument("--per-accent", type=int, default=150, help="training utterances per accent for probes")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    speakers = load_speakers(args.data)
    if not speakers:
        raise SystemExit(f"{args.data} has no speakers.json: seen/unseen source voices are unknown")
    res = {"run": args.run.name, "corpus": str(args.data),
           "head": head_by_source(args.run / "dev_attention_rescoring" / "results.jsonl", speakers),
           "probe": probe(args.run / "final", args.data, speakers, per_accent=args.per_accent)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(res, indent=1) + "\n")
    h = res["head"]
    print(f"head: seen-source {h['seen_source']['accuracy']}, unseen-source {h['unseen_source']['accuracy']}")
    for name, v in res["probe"]["features"].items():
        print(f"probe {name}: {v}")


if __name__ == "__main__":
    main()
