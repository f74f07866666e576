"""benchmarks/corpus_aid.py and corpus_check.py: augmentation, pooling, normalisation, dev-only selection."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from benchmarks import corpus_check
from benchmarks.corpus_aid import (
    CROP_FRAMES,
    AidConfig,
    AttentiveStats,
    TrainResult,
    XVector,
    augment_batch,
    cepstral_smoother,
    predict,
    train_classifier,
    warp_fbank,
)
from qifusion.data.manifest import Utterance


def test_warp_identity_tempo_and_direction():
    f = torch.randn(100, 80)
    assert torch.allclose(warp_fbank(f, 1.0, 1.0), f, atol=1e-5)
    assert warp_fbank(f, 1.0, 1.1).shape == (round(100 / 1.1), 80)
    assert warp_fbank(f, 1.0, 0.9).shape == (round(100 / 0.9), 80)
    peak = torch.zeros(10, 80)
    peak[:, 30] = 1.0
    # alpha > 1 (shorter vocal tract): energy moves to higher bins; alpha < 1: lower
    assert int(warp_fbank(peak, 1.2, 1.0)[0].argmax()) > 30
    assert int(warp_fbank(peak, 1 / 1.2, 1.0)[0].argmax()) < 30


def test_augment_batch_shapes_for_short_and_long_inputs():
    feats = [torch.randn(40, 80).half(), torch.randn(700, 80).half(), torch.randn(CROP_FRAMES, 80).half()]
    x = augment_batch(feats, AidConfig(warp=1.3, tempo=1.2), random.Random(0))
    assert x.shape == (3, CROP_FRAMES, 80) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    # deterministic for a seed
    assert torch.equal(x, augment_batch(feats, AidConfig(warp=1.3, tempo=1.2), random.Random(0)))


def test_attentive_pooling_with_uniform_weights_is_mean_and_std():
    pool = AttentiveStats(6)
    torch.nn.init.zeros_(pool.att[2].weight)
    torch.nn.init.zeros_(pool.att[2].bias)
    h = torch.randn(2, 6, 50)
    out = pool(h)
    assert out.shape == (2, 12)
    assert torch.allclose(out[:, :6], h.mean(dim=2), atol=1e-5)
    assert torch.allclose(out[:, 6:], h.std(dim=2, unbiased=False), atol=1e-4)


@pytest.mark.parametrize("pooling", ["stats", "attentive"])
def test_var_norm_makes_the_model_blind_to_per_bin_gain_and_offset(pooling):
    torch.manual_seed(0)
    model = XVector(3, channels=16, embed=8, pooling=pooling, var_norm=True).eval()
    x = torch.randn(1, 120, 80)
    gain, offset = torch.rand(80) * 3 + 0.5, torch.randn(80) * 5
    with torch.no_grad():
        assert torch.allclose(model(x), model(x * gain + offset), atol=1e-3)
        plain = XVector(3, channels=16, embed=8, pooling=pooling).eval()
        assert not torch.allclose(plain(x), plain(x * gain + offset), atol=1e-3)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="pooling"):
        AidConfig(pooling="max")
    with pytest.raises(ValueError, match="warp"):
        AidConfig(warp=0.9)


def _toy(n: int, seed: int) -> tuple[list[torch.Tensor], list[int]]:
    """Two classes told apart by the level of the low mel bins (survives CMN-free training)."""
    g = torch.Generator().manual_seed(seed)
    feats, labels = [], []
    for i in range(n):
        y = i % 2
        f = torch.randn(80 + i % 30, 80, generator=g)
        f[:, :20] += 3.0 if y else -3.0
        feats.append(f.half())
        labels.append(y)
    return feats, labels


def test_model_selection_keeps_the_best_epoch_on_the_dev_focus():
    train, train_y = _toy(32, 0)
    dev, dev_y = _toy(12, 1)
    focus = [1, 2, 5, 8]
    cfg = AidConfig(epochs=3, batch_size=8, var_norm=False, average_last=2)
    res = train_classifier(train, train_y, dev, dev_y, num_classes=2, config=cfg, dev_focus=focus, log=False)
    assert len(res.dev_acc) == len(res.dev_focus_acc) == 3 and res.steps == 12
    candidates = [(f, a, e) for e, (f, a) in enumerate(zip(res.dev_focus_acc, res.dev_acc), start=1)]
    candidates.append((res.avg_dev_focus_acc, res.avg_dev_acc, "avg"))
    best = max((f, a) for f, a, _ in candidates)
    kept = [e for f, a, e in candidates if (f, a) == best][-1]  # ties: the later candidate
    assert res.kept == kept and res.kept_dev == pytest.approx(best, abs=1e-4)
    pred = predict(res.model, dev)
    assert sum(pred[i] == dev_y[i] for i in focus) / len(focus) == pytest.approx(best[0], abs=1e-4)


def _utt(uid: str, accent: str, speaker: str) -> Utterance:
    return Utterance(utt_id=uid, audio=f"/nonexistent/{uid}.wav", accent=accent, speaker=speaker)


@pytest.mark.parametrize("select_on", ["unseen-source", "all"])
def test_identifiability_selects_on_dev_and_never_passes_test(monkeypatch, tmp_path, select_on):
    table = {s: {"source": s.split("_")[1]} for s in
             ("a_v1", "a_v2", "b_v3", "a_v1x", "a_v9", "b_v8", "a_v7", "b_v3y")}
    splits = {
        "train": [_utt("t1", "a", "a_v1"), _utt("t2", "a", "a_v2"), _utt("t3", "b", "b_v3")],
        "dev": [_utt("d1", "a", "a_v1x"), _utt("d2", "a", "a_v9"), _utt("d3", "b", "b_v8")],
        "test": [_utt("e1", "a", "a_v7"), _utt("e2", "b", "b_v3y")],
    }
    table["a_v1x"]["source"] = "v1"  # a transform of a training voice: not an unseen source
    table["b_v3y"]["source"] = "v3"
    monkeypatch.setattr(corpus_check, "load_speakers", lambda corpus: table)
    monkeypatch.setattr(corpus_check, "load_data_dir", lambda d: splits[Path(d).name])
    monkeypatch.setattr(corpus_check, "utterance_features", lambda path: torch.zeros(5, 80))
    seen: dict = {}

    def fake_train(train, train_y, dev, dev_y, **kw):
        seen.update(n_train=len(train), n_dev=len(dev), dev_y=dev_y, **kw)
        return TrainResult(model=torch.nn.Linear(1, 1), kept=1, dev_acc=[1.0], dev_focus_acc=[1.0], steps=1)

    monkeypatch.setattr(corpus_check, "train_classifier", fake_train)
    monkeypatch.setattr(corpus_check, "predict", lambda model, feats: [0] * len(feats))
    out = corpus_check.identifiability(tmp_path, train_per_accent=None, config=AidConfig(), max_minutes=1,
                                       seed=0, select_on=select_on)
    assert seen["n_train"] == 3 and seen["n_dev"] == 3 and seen["dev_y"] == [0, 0, 1]
    if select_on == "unseen-source":
        assert seen["dev_focus"] == [1, 2]  # a_v9, b_v8: sources unseen in train; a_v1x is a training voice
        assert out["dev_selection_speakers"] == ["a_v9", "b_v8"]
    else:  # every dev utterance
        assert seen["dev_focus"] is None and out["selected_on"] == "dev, all speakers"
    assert out["test_utts_unseen_source"] == 1 and out["test_acc_unseen_source"] == 1.0  # e1 (a, v7)
    assert out["per_speaker"]["b_v3y"]["unseen_source"] is False


def test_keep_sections_copy_only_from_the_same_corpus(tmp_path):
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit, match=r"--keep-asr: .* does not exist"):
        corpus_check.previous_section(out, tmp_path, "pocketsphinx", "--keep-asr")
    out.write_text(json.dumps({"corpus": str(tmp_path), "command": "x",
                               "pocketsphinx": {"per_accent": {"a": 1}},
                               "identifiability": {"test_acc": 0.9, "kept_from": "y"}}))
    assert (corpus_check.previous_section(out, tmp_path, "pocketsphinx", "--keep-asr")
            == {"per_accent": {"a": 1}, "kept_from": "x"})
    # a section kept twice names the run that measured it, not the run that copied it
    assert corpus_check.previous_section(out, tmp_path, "identifiability", "--keep-aid")["kept_from"] == "y"
    with pytest.raises(SystemExit, match=r"--keep-aid: .* is of corpus"):
        corpus_check.previous_section(out, tmp_path / "other", "identifiability", "--keep-aid")
    with pytest.raises(SystemExit, match="no 'baseline' section"):
        corpus_check.previous_section(out, tmp_path, "baseline", "--keep-x")


def test_keep_from_copies_a_section_from_another_json(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    for split in ("train", "dev", "test"):
        (corpus / split).mkdir(parents=True)
    source = tmp_path / "fbank.json"
    source.write_text(json.dumps({"corpus": str(corpus), "command": "measured",
                                  "identifiability": {"test_acc": 0.9}}))
    out = tmp_path / "new.json"
    threads = torch.get_num_threads()
    try:
        assert corpus_check.main([str(corpus), "--keep-aid", "--keep-from", str(source), "--no-asr",
                                  "--out", str(out)]) == 0
        with pytest.raises(SystemExit, match=r"--keep-aid: .*new\.json\.x does not exist"):  # default: --out
            corpus_check.main([str(corpus), "--keep-aid", "--no-asr", "--out", str(tmp_path / "new.json.x")])
        with pytest.raises(SystemExit) as usage:  # --keep-from alone keeps nothing: a usage error
            corpus_check.main([str(corpus), "--keep-from", str(source), "--no-asr", "--out", str(out)])
        assert usage.value.code == 2
        assert "--keep-from needs --keep-aid or --keep-asr" in capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out.read_text())["identifiability"] == {"test_acc": 0.9, "kept_from": "measured"}
    assert json.loads(source.read_text())["command"] == "measured"  # the source is not rewritten


def test_baseline_hurt_compares_accents_on_train_voice_speakers(monkeypatch, tmp_path):
    train = [_utt(f"t{i}", a, f"{a}_v1") for i, a in enumerate("aaab")] + [_utt("t9", "c", "c_v1")]
    # a's test has a held-out voice (v2, worst over all speakers) and a twin by its train voice v1
    test = [_utt("e1", "a", "a_v2"), _utt("e2", "a", "a_v1"), _utt("e3", "b", "b_v1"),
            _utt("e4", "c", "c_v1")]
    monkeypatch.setattr(corpus_check, "load_data_dir", lambda d: {"train": train, "test": test}[Path(d).name])
    monkeypatch.setattr(corpus_check, "load_speakers", lambda corpus: {})
    hyps = {"e1": "xxxxxxxxxx", "e2": "abcdefghiz", "e3": "abcxxxghij", "e4": "abcdexxhij"}  # 100/10/30/20%
    rows = [{"utt_id": u.utt_id, "accent": u.accent, "ref": "abcdefghij", "hyp": hyps[u.utt_id]}
            for u in test]
    report = {"cer": 40.0, "per_accent": {"a": {"cer": 55.0}, "b": {"cer": 30.0}, "c": {"cer": 20.0}}}
    calls: dict = {}

    def fake_decode(**kw):
        calls.update(kw)
        kw["out_dir"].mkdir(parents=True, exist_ok=True)
        (kw["out_dir"] / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return report

    import qifusion.decode.run

    monkeypatch.setattr(qifusion.decode.run, "decode_dir", fake_decode)
    asr = {"per_accent": {"a": {"wer": 40.0}, "b": {"wer": 90.0}, "c": {"wer": 60.0}}}
    out = corpus_check.baseline_hurt(tmp_path, tmp_path / "m" / "final", asr)
    assert calls["data_dir"] == tmp_path / "test" and calls["mode"] == "attention_rescoring"
    assert out["per_accent_cer_train_voice"] == {"a": 10.0, "b": 30.0, "c": 20.0}
    assert out["per_accent_cer_held_out"] == {"a": 100.0}
    assert (out["majority"], out["worst"], out["worst_over_majority"]) == ("a", "b", 3.0)
    # over all speakers the majority accent is the worst, because only it has a held-out voice
    assert (out["worst_all_speakers"], out["worst_over_majority_all_speakers"]) == ("a", 1.0)
    assert out["pocketsphinx_worst_over_majority"] == 2.25 and out["spearman_with_pocketsphinx"] == 1.0
    no_asr = corpus_check.baseline_hurt(tmp_path, tmp_path / "m" / "final", None)
    assert "pocketsphinx_worst_over_majority" not in no_asr


def test_cepstral_smoother_keeps_the_envelope_and_drops_the_harmonics():
    bins = torch.arange(80, dtype=torch.float32)
    envelope = torch.exp(-((bins - 25) / 15) ** 2)  # smooth: one broad formant
    harmonics = 0.5 * torch.cos(torch.pi * 40 * (bins + 0.5) / 80)  # fine structure, period 4 bins
    s = cepstral_smoother(80, 20)
    assert torch.allclose(s @ s, s, atol=1e-5)  # a projection
    out = (envelope + harmonics) @ s
    assert torch.allclose(out, envelope @ s, atol=1e-4)  # harmonics gone
    assert (out - envelope).abs().max() < 0.05  # envelope kept
    assert torch.allclose(cepstral_smoother(80, 80), torch.eye(80), atol=1e-5)  # all coefficients: identity


def test_table_reports_the_dev_accuracy_of_the_model_kept():
    from benchmarks.corpus_table import kept_dev

    run = {"dev_acc_by_epoch": [0.5, 0.9, 0.8], "dev_acc_unseen_source_by_epoch": [0.2, 0.6, 0.7],
           "dev_acc_avg_last": 0.85, "dev_acc_unseen_source_avg_last": 0.75, "config": {"average_last": 2}}
    assert kept_dev({**run, "kept_by_dev": 3}) == (0.8, 0.7, "epoch 3")
    assert kept_dev({**run, "kept_by_dev": "avg"}) == (0.85, 0.75, "avg of last 2")
    assert kept_dev({"dev_acc_by_epoch": [0.4, 0.6], "best_epoch_by_dev": 2}) == (0.6, None, "epoch 2")


def test_encoder_features_are_the_blocks_outputs(tiny_model_dir, synth_corpus):
    from benchmarks.corpus_aid import encoder_features
    from qifusion.data.audio import read_audio
    from qifusion.data.features import compute_fbank
    from qifusion.data.manifest import load_data_dir
    from qifusion.modeldir import load_model_dir

    utt = load_data_dir(synth_corpus / "dev")[0]
    enc = load_model_dir(tiny_model_dir).model.encoder
    blocks = [1, enc.num_blocks]
    out = encoder_features(tiny_model_dir, [utt.audio], blocks)
    feats = compute_fbank(read_audio(utt.audio), num_mel_bins=enc.cfg.input_dim).unsqueeze(0)
    with torch.no_grad():
        ref = enc(feats, torch.tensor([feats.shape[1]]), chunk_size=-1).hidden
    for b in blocks:
        (f,) = out[b]
        assert f.dtype == torch.float16 and f.shape == (ref[b - 1].shape[1], enc.output_size)
        assert torch.allclose(f.float(), ref[b - 1][0], atol=1e-2)
    assert not torch.allclose(out[1][0], out[enc.num_blocks][0])
    with pytest.raises(ValueError, match=rf"blocks \[{enc.num_blocks + 1}\] are not in 1..{enc.num_blocks}"):
        encoder_features(tiny_model_dir, [utt.audio], [enc.num_blocks + 1])


def _two_accent_corpus(monkeypatch) -> None:
    """Two accents, one utterance per accent and split, every speaker new; encoder block b's features of
    every utterance are filled with b."""
    splits = {"train": [_utt("t1", "a", "a_v1"), _utt("t2", "b", "b_v2")],
              "dev": [_utt("d1", "a", "a_v3"), _utt("d2", "b", "b_v4")],
              "test": [_utt("e1", "a", "a_v5"), _utt("e2", "b", "b_v6")]}
    monkeypatch.setattr(corpus_check, "load_speakers", lambda corpus: {})
    monkeypatch.setattr(corpus_check, "load_data_dir", lambda d: splits[Path(d).name])
    monkeypatch.setattr(corpus_check, "encoder_features",
                        lambda enc, paths, blocks: {b: [torch.full((4, 6), float(b))] * len(paths)
                                                    for b in blocks})


def test_identifiability_on_encoder_blocks_keeps_the_block_best_on_dev(monkeypatch, tmp_path):
    _two_accent_corpus(monkeypatch)  # block b's features are filled with b
    # block 2 is best on dev, block 3 best on nothing
    budgets, dev_acc = [], {1: 0.5, 2: 0.9, 3: 0.7}

    def fake_train(train, train_y, dev, dev_y, *, config, max_minutes, **kw):
        b = int(train[0][0, 0])
        budgets.append(max_minutes)
        assert config.warp == 1.0 and config.crop_frames == AidConfig().crop_frames // 4
        model = torch.nn.Linear(1, 1)
        model.block = b
        return TrainResult(model=model, kept=1, kept_dev=(dev_acc[b], dev_acc[b]),
                           dev_acc=[dev_acc[b]], dev_focus_acc=[dev_acc[b]], steps=1)

    monkeypatch.setattr(corpus_check, "train_classifier", fake_train)
    monkeypatch.setattr(corpus_check, "predict", lambda model, feats: [0, 1] if model.block == 2 else [1, 0])
    out = corpus_check.identifiability(tmp_path, train_per_accent=None, config=AidConfig(), max_minutes=9,
                                       seed=0, encoder=tmp_path / "m", blocks=[1, 2, 3])
    assert budgets == [3, 3, 3]  # the budget is shared by the blocks tried
    assert out["encoder_block"] == 2 and out["dev_acc_by_block"] == dev_acc and out["test_acc"] == 1.0


def test_fusion_weight_is_chosen_on_dev():
    from benchmarks.corpus_aid import FUSION_WEIGHTS, fuse_weight

    # fbank right on utts 0-1, encoder right on 2-3; utt 4 needs both (encoder's mild vote wins)
    fb = torch.log(torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6], [0.45, 0.55]]))
    enc = torch.log(torch.tensor([[0.45, 0.55], [0.55, 0.45], [0.1, 0.9], [0.9, 0.1], [0.7, 0.3]]))
    labels = [0, 1, 1, 0, 0]
    w, focus_acc, acc = fuse_weight(fb, enc, labels, None)
    assert acc == 1.0 and focus_acc == 1.0 and 0.3 <= w <= 0.7
    g = torch.Generator().manual_seed(0)
    fb, enc = (torch.log_softmax(3 * torch.randn(60, 4, generator=g), dim=1) for _ in range(2))
    labels = torch.randint(0, 4, (60,), generator=g).tolist()
    focus = list(range(0, 60, 3))

    def acc_at(w: float, idx: list[int]) -> float:
        pred = (w * enc + (1 - w) * fb).argmax(dim=1)
        return sum(int(pred[i]) == labels[i] for i in idx) / len(idx)

    w, focus_acc, acc = fuse_weight(fb, enc, labels, focus)
    assert w in FUSION_WEIGHTS and focus_acc == round(max(acc_at(v, focus) for v in FUSION_WEIGHTS), 4)
    assert acc == round(acc_at(w, list(range(60))), 4)


def test_identifiability_fuses_fbank_and_the_encoder_block_kept(monkeypatch, tmp_path):
    _two_accent_corpus(monkeypatch)
    monkeypatch.setattr(corpus_check, "utterance_features", lambda path: torch.zeros(9, 80))
    budgets = {}

    def fake_train(train, train_y, dev, dev_y, *, config, max_minutes, **kw):
        key = 0 if train[0].shape[1] == 80 else int(train[0][0, 0])
        budgets[key] = max_minutes
        model = torch.nn.Linear(1, 1)
        model.key = key
        return TrainResult(model=model, kept=1, kept_dev=(0.5, 0.5), dev_acc=[0.5], dev_focus_acc=[0.5],
                           steps=1)

    # dev: fbank right on d1 only, block 1 right on d2 only; together both right. test: the same pattern
    votes = {0: [[0.9, 0.1], [0.6, 0.4]], 1: [[0.4, 0.6], [0.1, 0.9]]}
    monkeypatch.setattr(corpus_check, "train_classifier", fake_train)
    monkeypatch.setattr(corpus_check, "log_posteriors",
                        lambda model, feats: torch.log(torch.tensor(votes[model.key])))
    out = corpus_check.identifiability(tmp_path, train_per_accent=None, config=AidConfig(), max_minutes=8,
                                       seed=0, encoder=tmp_path / "m", blocks=[1], fuse=True)
    assert budgets == {0: 4, 1: 4}  # half the budget each
    f = out["fusion"]
    assert f["dev_acc"] == 1.0 and out["test_acc"] == 1.0
    assert f["test_acc_fbank"] == 0.5 and f["test_acc_encoder"] == 0.5
    assert out["classifier"].startswith("score fusion")
