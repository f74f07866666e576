"""Error rates cross-checked against jiwer and editdistance; per-accent report; plots."""

from __future__ import annotations

import json
import random

import editdistance
import jiwer
import pytest

from qifusion.eval.metrics import ErrorCounts, cer_counts, cer_units, normalize_text, wer_counts, wer_units
from qifusion.eval.plots import plot_aid_confusion, plot_per_accent_cer
from qifusion.eval.report import REPORT_KEYS, UttResult, build_report, render_markdown

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away"]


def _rand_sentence(rng: random.Random, *, max_words: int = 8) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_words)))


def _mutate(rng: random.Random, s: str) -> str:
    words = s.split()
    for _ in range(rng.randint(0, 4)):
        op = rng.choice(["sub", "del", "ins"])
        i = rng.randrange(len(words) + 1)
        if op == "ins" or not words:
            words.insert(i, rng.choice(WORDS))
        elif op == "del":
            words.pop(min(i, len(words) - 1))
        else:
            words[min(i, len(words) - 1)] = rng.choice(WORDS)
    return " ".join(words)


def test_units_and_normalisation() -> None:
    assert normalize_text("Hello, World!  Don't stop.") == "hello world don't stop"
    assert cer_units("ab c") == ["a", "b", "c"]
    assert wer_units("我们 go 回家") == ["我", "们", "go", "回", "家"]
    assert cer_units("我们回家") == ["我", "们", "回", "家"]


def test_counts_small_example() -> None:
    c = wer_counts("the cat sat on the mat", "the cat sit on mat")
    assert (c.sub, c.dele, c.ins, c.ref_len) == (1, 1, 0, 6)
    c = wer_counts("a b c d", "a b x c d e")
    assert (c.sub, c.dele, c.ins) == (0, 0, 2)
    assert c.rate == pytest.approx(50.0)
    assert cer_counts("abc", "abc").rate == 0.0
    assert cer_counts("", "ab").rate == 200.0  # no reference units: errors / 1


def test_random_pairs_match_jiwer_and_editdistance() -> None:
    rng = random.Random(0)
    refs = [_rand_sentence(rng) for _ in range(200)]
    hyps = [_mutate(rng, r) for r in refs]
    hyps = [h if h else "x" for h in hyps]
    tot_w, tot_c = ErrorCounts(), ErrorCounts()
    for r, h in zip(refs, hyps):
        w = wer_counts(r, h)
        jo = jiwer.process_words(r, h)
        assert (w.sub, w.dele, w.ins) == (jo.substitutions, jo.deletions, jo.insertions)
        assert w.errors == editdistance.eval(r.split(), h.split())
        c = cer_counts(r, h)
        assert c.errors == editdistance.eval(r.replace(" ", ""), h.replace(" ", ""))
        assert c.ref_len - c.dele + c.ins == len(h.replace(" ", ""))
        tot_w, tot_c = tot_w + w, tot_c + c
    assert tot_w.rate == pytest.approx(100 * jiwer.wer(refs, hyps))
    nospace = [s.replace(" ", "") for s in refs], [s.replace(" ", "") for s in hyps]
    assert tot_c.rate == pytest.approx(100 * jiwer.cer(*nospace))


def _results() -> list[UttResult]:
    rng = random.Random(1)
    out = []
    for i in range(60):
        acc = ["us", "gb", "in"][i % 3]
        ref = _rand_sentence(rng)
        pred = acc if rng.random() < 0.7 else rng.choice(["us", "gb", "in"])
        out.append(UttResult(f"u{i}", ref, _mutate(rng, ref), acc, pred, 0.9))
    return out


def test_per_accent_report_matches_jiwer() -> None:
    results = _results()
    rep = build_report(results, mode="ctc_greedy", chunk_size=16, rtf=0.05)
    assert tuple(rep) == REPORT_KEYS
    assert rep["num_utts"] == 60 and rep["chunk_size"] == 16 and rep["mode"] == "ctc_greedy"
    for acc in ("us", "gb", "in"):
        sub = [r for r in results if r.accent == acc]
        refs, hyps = [r.ref for r in sub], [r.hyp for r in sub]
        s = rep["per_accent"][acc]
        assert set(s) == {"cer", "wer", "num_utts", "sub", "del", "ins"}
        assert s["num_utts"] == 20
        assert s["wer"] == pytest.approx(100 * jiwer.wer(refs, hyps), abs=1e-3)
        ns_r, ns_h = [x.replace(" ", "") for x in refs], [x.replace(" ", "") for x in hyps]
        assert s["cer"] == pytest.approx(100 * jiwer.cer(ns_r, ns_h), abs=1e-3)
        co = jiwer.process_characters(ns_r, ns_h)
        assert s["sub"] + s["del"] + s["ins"] == co.substitutions + co.deletions + co.insertions
        assert s["del"] - s["ins"] == co.deletions - co.insertions
    acc_ok = sum(r.accent == r.pred_accent for r in results) / 60
    assert rep["aid_accuracy"] == pytest.approx(acc_ok, abs=1e-6)
    conf = rep["aid_confusion"]
    assert conf["labels"] == ["gb", "in", "us"]
    assert sum(map(sum, conf["matrix"])) == 60
    assert [sum(row) for row in conf["matrix"]] == [20, 20, 20]
    json.dumps(rep)  # serialisable
    md = render_markdown(rep)
    assert "| us | 20 |" in md and "confusion" in md


def test_report_without_accent_labels() -> None:
    res = [UttResult("a", "x y", "x y"), UttResult("b", "x y", "x z", None, "us", 0.5)]
    rep = build_report(res, mode="attention", chunk_size=-1, rtf=0.1)
    assert rep["aid_accuracy"] is None and rep["aid_confusion"] is None
    assert rep["per_accent"]["unknown"]["num_utts"] == 2
    assert rep["wer"] == pytest.approx(25.0)


def test_plots_are_png(tmp_path) -> None:
    rep = build_report(_results(), mode="ctc_greedy", chunk_size=-1, rtf=0.1)
    plot_per_accent_cer(rep, tmp_path / "cer.png")
    plot_aid_confusion(rep, tmp_path / "aid.png")
    for name in ("cer.png", "aid.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_per_accent_cer_labels_are_not_hidden() -> None:
    """No legend over the bars; every value label is inside the axes, on a white box above the mean line,
    and does not overlap the mean line's own label (tallest bars on the right, one bar at the mean)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from qifusion.eval.plots import per_accent_cer_figure

    cers = [20.0, 45.0, 80.0, 95.0]
    per = {f"accent-{i}": {"cer": c, "wer": c, "num_utts": 10} for i, c in enumerate(cers)}
    rep = {"per_accent": per, "cer": 45.0, "mode": "ctc_greedy", "chunk_size": 16}
    fig = per_accent_cer_figure(rep)
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    assert ax.get_legend() is None
    labels = [t for t in ax.texts if t.get_text() in {"20.0", "45.0", "80.0", "95.0"}]
    mean_label = next(t for t in ax.texts if t.get_text().startswith("all "))
    line = ax.get_lines()[0]
    box = ax.get_window_extent(renderer)
    assert len(labels) == 4
    for t in labels:
        ext = t.get_window_extent(renderer)
        assert box.y0 <= ext.y0 and ext.y1 <= box.y1 and box.x0 <= ext.x0 and ext.x1 <= box.x1
        assert not ext.overlaps(mean_label.get_window_extent(renderer))
        assert t.get_zorder() > line.get_zorder()
        assert t.get_bbox_patch().get_facecolor()[:3] == (1.0, 1.0, 1.0)
