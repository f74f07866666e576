"""Which average of checkpoints should end a run? (issue 17)

    python -m benchmarks.average_window fp-baseline-s2-accents  # a finished run: dev CER of each rule

A run of :mod:`benchmarks.recipe` keeps the newest ``train.keep_checkpoints`` step and epoch checkpoints
(2 + 2, one every 250 steps and one per epoch) and ends on the average of the newest ``train.average_last``
(4) of them. While it trains, :func:`keeping` hard-links every checkpoint it writes into
``EXP/NAME.archive/`` (no copy and no effect on training: pruning unlinks the run's name, the archive's link
stays). The command replays, for each ``(keep, average)`` rule of ``RULES``, the trainer's own pruning
(:func:`qifusion.train.checkpoint.prune_checkpoints`) and final average
(:func:`qifusion.train.average.average_checkpoints`, ``by="last"``) on a scratch copy of the archive
(hard links again), decodes dev with the search and CER of the run's dev passes (CTC greedy), and writes
``benchmarks/results/recipe/average/NAME.json``. The committed rule (2, 4) reproduces the run's own final
model, a check that the replay is the trainer's. Dev only: the test split is never read here.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.recipe import EXP, RESULTS, corpus, parse
from qifusion.fileio import atomic_write_text

# (train.keep_checkpoints, train.average_last): (2, 1) is the last step alone; (2, 4) the committed rule;
# keep 0 keeps every checkpoint (step and epoch ones interleaved, ~1 per 160 steps at the recipe's pace)
RULES = ((2, 1), (2, 4), (3, 6), (4, 8), (5, 10), (6, 12), (8, 16), (0, 8), (0, 16), (0, 24))
OUT = RESULTS / "average"
INDEX = "checkpoints.json"
SMALL_FILES = ("config.yaml", "units.txt", "accents.txt", "cmvn.json")


def archive_of(exp: Path) -> Path:
    """Where the checkpoints of the run trained in ``exp`` are kept: ``EXP/NAME.archive`` beside it."""
    return exp.parent / f"{exp.name}.archive"


def link_new(exp: Path, archive: Path) -> list[str]:
    """Hard-link into ``archive`` every ``step_*.pt`` / ``epoch_*.pt`` of ``exp`` it lacks or holds another
    file of (a checkpoint written again after a resume), and copy the run's checkpoint index beside them;
    returns the names linked. A file pruned meanwhile is skipped."""
    archive.mkdir(parents=True, exist_ok=True)
    linked = []
    for f in sorted([*exp.glob("step_*.pt"), *exp.glob("epoch_*.pt")]):
        target, tmp = archive / f.name, archive / f".{f.name}.tmp"
        try:
            if target.exists() and os.path.samefile(f, target):
                continue
            tmp.unlink(missing_ok=True)
            os.link(f, tmp)
        except FileNotFoundError:  # pruned between the listing and the link
            continue
        os.replace(tmp, target)
        linked.append(f.name)
    kept = _entries(archive / INDEX)
    merged = {e["file"]: e for e in kept}
    merged.update({e["file"]: e for e in _entries(exp / INDEX)})  # the archive keeps pruned entries too
    if list(merged.values()) != kept or not (archive / INDEX).exists():  # not rewritten on every pass
        atomic_write_text(archive / INDEX, json.dumps(list(merged.values()), indent=1) + "\n")
    return linked


def _entries(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [e for e in data if isinstance(e, dict) and "file" in e] if isinstance(data, list) else []


@contextmanager
def keeping(exp: Path, archive: Path, *, every: float = 10.0) -> Iterator[None]:
    """While the block runs (a training of ``exp``), hard-link its new checkpoints into ``archive`` every
    ``every`` seconds, and once more when it ends."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                link_new(exp, archive)
            except OSError as e:  # the run goes on; the next pass tries again
                print(f"{archive}: {e}", flush=True)
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        link_new(exp, archive)


def kept_files(archive: Path, scratch: Path, *, keep_n: int, average: int) -> list[str]:
    """The checkpoints a run that kept ``keep_n`` (``train.keep_checkpoints``) would average under
    ``train.average_last = average``: the archive hard-linked into ``scratch``, pruned and selected by the
    trainer's own functions (``scratch`` is left holding the kept files)."""
    from qifusion.train.average import select_checkpoints
    from qifusion.train.checkpoint import prune_checkpoints

    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    for f in archive.iterdir():
        if f.suffix == ".pt":
            os.link(f, scratch / f.name)
    shutil.copyfile(archive / INDEX, scratch / INDEX)
    prune_checkpoints(scratch, keep=keep_n)
    return [e["file"] for e in select_checkpoints(scratch, num=average, by="last")]


def evaluate(name: str) -> Path:
    """Dev CER (CTC greedy) of the final model under each rule of ``RULES``; writes ``OUT/NAME.json``."""
    from qifusion.decode.run import decode_dir
    from qifusion.train.average import average_checkpoints
    from qifusion.train.checkpoint import read_index

    parse(name)
    exp = EXP / name
    archive = archive_of(exp)
    if not (exp / "final" / "model.pt").exists() or not archive.is_dir():
        raise SystemExit(f"{name}: needs a finished run ({exp / 'final'}) and the archive its training kept "
                         f"({archive}; `python -m benchmarks.recipe run` keeps one)")
    steps = {e["file"]: e.get("step") for e in read_index(archive)}
    dev = corpus(name) / "dev"
    work = EXP / f"{name}.average"
    rows = []
    for keep_n, average in RULES:
        scratch = work / f"k{keep_n}_n{average}"
        files = kept_files(archive, scratch, keep_n=keep_n, average=average)
        for f in SMALL_FILES:
            shutil.copyfile(exp / f, scratch / f)
        model = average_checkpoints(exp_dir=scratch, num=average, by="last", files=files,
                                    out_dir=scratch / "model")
        rep = decode_dir(model_dir=model, data_dir=dev, out_dir=scratch / "dev_ctc_greedy", mode="ctc_greedy",
                         progress=False)
        span = [steps[f] for f in files]
        rows.append({"keep_checkpoints": keep_n, "average_last": average, "files": files,
                     "steps": [min(span), max(span)], "dev_cer": rep["cer"], "dev_wer": rep["wer"],
                     "dev_aid_accuracy": rep.get("aid_accuracy")})
        print(f"{name}: keep {keep_n}, average {average} ({', '.join(files)}): dev CER {rep['cer']:.2f}",
              flush=True)
    final_card = json.loads((exp / "final" / "card.json").read_text())
    result = {"run": name, "split": "dev", "mode": "ctc_greedy", "archive": sorted(steps),
              "run_final": {"averaged": final_card.get("averaged"),
                            "dev_cer": final_card.get("dev", {}).get("dev_cer")},
              "rules": rows, "best_by_dev": min(rows, key=lambda r: r["dev_cer"])}
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"{name}.json"
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", help="finished runs: dev CER of their final model under each rule")
    args = ap.parse_args()
    for n in args.names:
        print(evaluate(n))


if __name__ == "__main__":
    main()
