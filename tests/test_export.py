"""`qifusion export` and the ONNX backend: sherpa-onnx interop, torch parity, int8, transcribe.

The tiny trained model is exported once per session (float + int8); sherpa-onnx decodes it at its
defaults (chunk 16, 4 left chunks), which are also the export's.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from recognizer_helpers import make_random_model_dir, noise_utterance

from qifusion.errors import UserError

CHUNK, LEFT = 16, 4
ROOT = Path(__file__).resolve().parents[1]
TAIL_SECONDS = 0.66  # trailing zeros before input_finished(), as sherpa-onnx's examples do


@pytest.fixture(scope="session")
def exported(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qifusion.export.onnx_export import export_model

    out = tmp_path_factory.mktemp("export") / "onnx"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            export_model(model_dir=tiny_model_dir, out_dir=out, int8=True, chunk_size=CHUNK, left_chunks=LEFT)
    finally:
        torch.set_num_threads(threads)
    EXPORT_LOG.append(err.getvalue())
    return out


EXPORT_LOG: list[str] = []  # what export_model printed (stderr) in the session fixture


def test_export_reports_progress_and_defaults_outside_git(exported: Path) -> None:
    import subprocess

    from qifusion.cli import build_parser
    from qifusion.export.onnx_export import default_export_dir

    lines = EXPORT_LOG[0].splitlines()
    # three graphs: wenet_ctc, the chunk step, the decoder
    assert lines[0].startswith("qifusion export: exporting 3 ONNX graphs of ")
    for i, name in enumerate(["model.onnx", "encoder_chunk.onnx", "decoder.onnx"], start=1):
        assert any(x.startswith(f"qifusion export: [{i}/3] {name}: tracing") for x in lines), name
        assert any(x.startswith(f"qifusion export: [{i}/3] {name} written (") for x in lines), name
    assert any("quantising to int8" in x for x in lines) and any("int8 copies written" in x for x in lines)
    assert build_parser().parse_args(["export", "--model", "M"]).out is None
    shipped = ROOT / "models" / "accents-en-qifusion"
    assert default_export_dir(shipped) == shipped / "onnx"
    ignored = subprocess.run(["git", "check-ignore", "-q", "models/accents-en-qifusion/onnx/model.onnx"],
                             cwd=ROOT, check=False)
    assert ignored.returncode == 0, "exports into models/*/onnx must be git-ignored"


@pytest.fixture(scope="session")
def utterances(synth_corpus: Path) -> list[tuple[str, str, np.ndarray]]:
    """(utt_id, text, samples 16 kHz) of the test, dev and train splits (in that order)."""
    from qifusion.data.audio import read_audio
    from qifusion.data.manifest import load_data_dir

    utts = [u for split in ("test", "dev", "train") for u in load_data_dir(synth_corpus / split)]
    return [(u.utt_id, u.text, read_audio(u.audio)) for u in utts]


def _sherpa_decode(export_dir: Path, samples: np.ndarray) -> tuple[list[str], int]:
    """sherpa-onnx's tokens for ``samples`` (+ trailing zeros) and the number of chunks it decoded."""
    import sherpa_onnx

    rec = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(
        tokens=str(export_dir / "tokens.txt"), model=str(export_dir / "model.onnx"), chunk_size=CHUNK,
        num_left_chunks=LEFT, num_threads=1)
    s = rec.create_stream()
    s.accept_waveform(16000, samples)
    s.accept_waveform(16000, np.zeros(int(TAIL_SECONDS * 16000), dtype=np.float32))
    s.input_finished()
    n = 0
    while rec.is_ready(s):
        rec.decode_stream(s)
        n += 1
    return list(rec.get_result_all(s).tokens), n


def test_export_layout_and_sherpa_metadata(exported: Path, tiny_model_dir: Path) -> None:
    import onnx

    from qifusion.modeldir import load_model_dir

    info = json.loads((exported / "export.json").read_text())
    assert (info["chunk_size"], info["left_chunks"], info["int8"]) == (CHUNK, LEFT, False)
    assert set(info["files"]) == {"wenet_ctc", "chunk", "decoder"}
    assert json.loads((exported / "int8" / "export.json").read_text())["int8"] is True
    for name in ("model.onnx", "tokens.txt", "encoder_chunk.onnx", "decoder.onnx", "config.yaml", "units.txt",
                 "accents.txt"):
        assert (exported / name).is_file() and (exported / "int8" / name).is_file(), name
    enc = load_model_dir(tiny_model_dir).model.encoder
    m = onnx.load(str(exported / "model.onnx"))
    meta = {p.key: p.value for p in m.metadata_props}
    tokens = (exported / "tokens.txt").read_text().splitlines()
    assert tokens[0] == "<blank> 0" and len(tokens) == int(meta["vocab_size"])
    keys = ("head", "num_blocks", "output_size", "cnn_module_kernel", "right_context", "subsampling_factor")
    assert {k: int(meta[k]) for k in keys} == {
        "head": enc.num_heads, "num_blocks": enc.num_blocks, "output_size": enc.output_size,
        "cnn_module_kernel": enc.cnn_module_kernel, "right_context": enc.right_context,
        "subsampling_factor": enc.subsampling_rate}
    q = {p.key: p.value for p in onnx.load(str(exported / "int8" / "model.onnx")).metadata_props}
    assert q["num_blocks"] == meta["num_blocks"]  # quantisation keeps the metadata sherpa-onnx reads
    ins = [(i.name, [d.dim_value for d in i.type.tensor_type.shape.dim]) for i in m.graph.input]
    R, T_in = CHUNK * LEFT, (CHUNK - 1) * enc.subsampling_rate + enc.right_context + 1
    assert ins == [("x", [1, T_in, 80]), ("offset", [1]), ("required_cache_size", [1]),
                   ("attn_cache", [enc.num_blocks, enc.num_heads, R, 2 * enc.d_k]),
                   ("conv_cache", [enc.num_blocks, 1, enc.output_size, enc.cnn_module_kernel - 1]),
                   ("attn_mask", [1, 1, R + CHUNK])]


def test_sherpa_onnx_equals_ctc_greedy(exported: Path, tiny_model_dir: Path,
                                       utterances: list[tuple[str, str, np.ndarray]]) -> None:
    from qifusion.data.features import compute_fbank
    from qifusion.decode.search import ctc_greedy
    from qifusion.modeldir import load_model_dir

    lm = load_model_dir(tiny_model_dir)
    nonempty = 0
    for utt_id, _, samples in utterances[:4]:
        tokens, n_chunks = _sherpa_decode(exported, samples)
        padded = np.concatenate([samples, np.zeros(int(TAIL_SECONDS * 16000), dtype=np.float32)])
        feats = compute_fbank(padded)
        with torch.no_grad():
            enc = lm.model.encode(feats[None], torch.tensor([feats.shape[0]]), chunk_size=CHUNK,
                                  left_chunks=LEFT)
        t = n_chunks * CHUNK  # sherpa-onnx decodes whole chunks only
        assert enc.ctc_log_probs.shape[1] - CHUNK < t <= enc.ctc_log_probs.shape[1]
        hyp = ctc_greedy(enc.ctc_log_probs[:, :t], torch.tensor([t]))[0]
        ours = [lm.tokenizer.id2token(i).replace("\u2581", " ") for i in hyp.tokens]  # sherpa: ▁ -> space
        assert tokens == ours, utt_id
        nonempty += bool(ours)
    assert nonempty >= 3  # a real comparison, not empty == empty


def test_onnx_chunks_match_torch(exported: Path, tiny_model_dir: Path,
                                 utterances: list[tuple[str, str, np.ndarray]]) -> None:
    """Two streams batched through the ONNX chunk graph vs torch forward_chunk, per chunk (incl. the
    shorter last chunk), and the offline encode."""
    from qifusion.data.features import compute_fbank
    from qifusion.export.onnx_backend import load_onnx_model
    from qifusion.modeldir import load_model_dir

    model = load_model_dir(tiny_model_dir).model
    onnx_model = load_onnx_model(exported).model
    # two long streams (three utterances each) so the fixed-size cache fills and slides
    audio = [np.concatenate([u[2] for u in utterances[i:6:2]]) for i in range(2)]
    feats = [compute_fbank(a) for a in audio]
    n = min(f.shape[0] for f in feats) - 5  # not a whole number of chunks: a shorter last chunk
    feats = [f[:n] for f in feats]
    x = torch.stack(feats)
    st, so = model.init_state(2), onnx_model.init_state(2)
    window, stride = onnx_model.input_frames, CHUNK * onnx_model.subsampling_rate
    diffs: dict[str, float] = {}
    start, chunks = 0, 0
    with torch.no_grad():
        while n - start >= onnx_model.right_context + 1:
            piece = x[:, start : start + window]
            rt, st = model.forward_chunk(piece, st, chunk_size=CHUNK, left_chunks=LEFT)
            ro, so = onnx_model.forward_chunk(piece, so, chunk_size=CHUNK, left_chunks=LEFT)
            for k in ("ctc_log_probs", "memory", "accent_post", "accent_utt"):
                a, b = getattr(rt, k), getattr(ro, k)
                assert a.shape == b.shape, k
                diffs[k] = max(diffs.get(k, 0.0), float((a - b).abs().max()))
            start += stride
            chunks += 1
    print("max abs diff per chunk, ONNX vs torch:", diffs)
    assert chunks > LEFT + 1  # the fixed-size cache is full and sliding
    assert diffs["ctc_log_probs"] < 1e-3 and diffs["memory"] < 1e-3, diffs
    assert diffs["accent_post"] < 1e-4 and diffs["accent_utt"] < 1e-4, diffs
    with torch.no_grad():
        e1 = model.encode(x[:1], torch.tensor([n]), chunk_size=CHUNK, left_chunks=LEFT)
    e2 = onnx_model.encode(x[:1], torch.tensor([n]), chunk_size=-1, left_chunks=-1)  # -1 = exported
    assert torch.equal(e1.lens, e2.lens)
    assert float((e1.ctc_log_probs - e2.ctc_log_probs).abs().max()) < 1e-3
    assert float((e1.accent_utt - e2.accent_utt).abs().max()) < 1e-4
    with pytest.raises(UserError, match="chunk size 16 with 4 left chunks"):
        onnx_model.forward_chunk(x[:1, :window], onnx_model.init_state(1), chunk_size=8, left_chunks=LEFT)


def test_decoder_scores_match_torch(exported: Path, tiny_model_dir: Path) -> None:
    from qifusion.export.onnx_backend import load_onnx_model
    from qifusion.modeldir import load_model_dir

    model = load_model_dir(tiny_model_dir).model
    onnx_model = load_onnx_model(exported).model
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(2, 23, model.encoder.output_size, generator=g)
    lens = torch.tensor([23, 17])
    hyps = [[[3, 4, 5], [6], []], [[7, 8, 9, 10, 11]]]
    ref = model.attention_scores(memory, lens, hyps)
    got = onnx_model.attention_scores(memory, lens, hyps)
    for a, b in zip(ref, got):
        assert a.shape == b.shape and float((a - b).abs().max()) < 1e-3
    ys = torch.tensor([[model.sos_eos, 3, 4], [model.sos_eos, 5, 6]])
    mmask = (torch.arange(23)[None] < lens[:, None]).unsqueeze(1)
    with torch.no_grad():
        lp_ref, _ = model.decoder_step(memory, mmask, ys, None)
    lp, _ = onnx_model.decoder_step(memory, mmask, ys, None)
    assert float((lp_ref - lp).abs().max()) < 1e-3


def test_int8_cer_close_to_float(exported: Path, utterances: list[tuple[str, str, np.ndarray]]) -> None:
    from qifusion.decode.recognizer import Recognizer
    from qifusion.eval.metrics import ErrorCounts, cer_counts

    cers, nonempty = {}, 0
    for name, path in (("float", exported), ("int8", exported / "int8")):
        rec = Recognizer.from_model_dir(path, chunk_size=CHUNK, left_chunks=LEFT, mode="ctc_greedy",
                                        backend="onnx")
        total = ErrorCounts()
        for _, text, samples in utterances:
            s = rec.create_stream()
            s.accept_waveform(16000, samples)
            s.input_finished()
            while rec.is_ready(s):
                rec.decode(s)
            total = total + cer_counts(text, s.result.text)
            nonempty += name == "float" and bool(s.result.text)
        cers[name] = total.rate
    print(f"CER float {cers['float']:.2f}%, int8 {cers['int8']:.2f}%")
    assert nonempty >= len(utterances) // 2  # the comparison is not empty text against empty text
    assert abs(cers["int8"] - cers["float"]) <= 0.5, cers


@pytest.mark.parametrize("streaming", [False, True])
def test_transcribe_onnx_equals_torch(exported: Path, tiny_model_dir: Path, synth_corpus: Path,
                                      streaming: bool, tmp_path: Path) -> None:
    import shutil

    from test_calibration import write_calibration

    from qifusion.data.manifest import load_data_dir
    from qifusion.decode.transcribe import transcribe_files

    files = [Path(u.audio) for u in load_data_dir(synth_corpus / "test")]
    lines = {}
    accents = tuple((tiny_model_dir / "accents.txt").read_text().split())
    for backend, src in (("torch", tiny_model_dir), ("onnx", exported)):
        model_dir = tmp_path / backend  # a copy with a calibration at temperature 1: raw accents are shown
        shutil.copytree(src, model_dir)
        write_calibration(model_dir, temperature=1.0, accents=accents)
        out = io.StringIO()
        failed = transcribe_files(model_dir=model_dir, files=files, mode="attention_rescoring",
                                  chunk_size=CHUNK, left_chunks=LEFT, streaming=streaming, backend=backend,
                                  out=out)
        assert failed == 0
        lines[backend] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines["onnx"]) == len(files)
    for a, b in zip(lines["torch"], lines["onnx"]):
        assert (a["text"], a["accent"]) == (b["text"], b["accent"]) and a["accent"] in accents
        assert abs(a["accent_prob"] - b["accent_prob"]) < 1e-3
    assert any(line["text"] for line in lines["onnx"])


def test_streaming_onnx_uses_the_exported_chunk_size(exported: Path, synth_corpus: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    from qifusion.data.manifest import load_data_dir
    from qifusion.decode.transcribe import transcribe_files

    wav = Path(load_data_dir(synth_corpus / "test")[0].audio)
    texts = []
    for chunk in (-1, CHUNK):
        out = io.StringIO()
        assert transcribe_files(model_dir=exported, files=[wav], streaming=True, chunk_size=chunk,
                                backend="onnx", out=out) == 0
        texts.append(json.loads(out.getvalue())["text"])
    assert texts[0] == texts[1]
    assert "chunk" not in capsys.readouterr().err  # no "--streaming needs a chunk size" with ONNX


def test_decode_dir_onnx_equals_torch(exported: Path, tiny_model_dir: Path, synth_corpus: Path,
                                     tmp_path: Path) -> None:
    """`qifusion decode --backend onnx` gives the torch backend's hypotheses and accents."""
    from qifusion.decode.run import decode_dir

    hyps = {}
    for backend, model_dir in (("torch", tiny_model_dir), ("onnx", exported)):
        out = tmp_path / backend
        report = decode_dir(model_dir=model_dir, data_dir=synth_corpus / "test", out_dir=out,
                            mode="attention_rescoring", chunk_size=CHUNK, left_chunks=LEFT, backend=backend,
                            device="cpu", progress=False)
        assert report["num_utts"] > 0
        hyps[backend] = (out / "hyp.txt").read_text()
    assert hyps["onnx"] == hyps["torch"]


def test_model_dir_with_onnx_subdir(exported: Path, tmp_path: Path) -> None:
    """`--model MODEL --backend onnx` finds MODEL/onnx (the documented place for an export)."""
    from qifusion.decode.recognizer import Recognizer
    from qifusion.export.onnx_backend import find_export_dir

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "onnx").symlink_to(exported, target_is_directory=True)
    assert find_export_dir(tmp_path / "m") == tmp_path / "m" / "onnx"
    rec = Recognizer.from_model_dir(tmp_path / "m", backend="onnx", mode="ctc_greedy")  # left_chunks -1
    s = rec.create_stream()
    s.accept_waveform(16000, noise_utterance(1.0, sr=16000, seed=0))
    s.input_finished()
    while rec.is_ready(s):
        rec.decode(s)
    assert s.finalized and rec.model.left_chunks == LEFT


def test_fuse_into_ctc_travels_in_extra_cache_blocks(tmp_path: Path) -> None:
    """fuse_into_ctc: LAF and fusion caches ride in two extra attn_cache blocks; the ONNX graph run the
    way sherpa-onnx runs it (fixed zero-filled masked caches) equals torch streaming."""
    import onnxruntime as ort

    from qifusion.config import load_config
    from qifusion.data.features import compute_fbank
    from qifusion.data.tokenizer import Tokenizer
    from qifusion.export.onnx_export import _export
    from qifusion.export.wenet_ctc import WenetCtcModule
    from qifusion.models.model import QifusionModel

    torch.manual_seed(0)
    cfg = load_config(Path(__file__).resolve().parents[1] / "conf" / "tiny.yaml",
                      ["model.accent.fuse_into_ctc=true"])
    tok = Tokenizer.build(["the quick brown fox"])
    model = QifusionModel(cfg.model, vocab_size=tok.vocab_size, num_accents=3).eval()
    w = WenetCtcModule(model, chunk_size=4, left_chunks=2).eval()
    assert w.metadata(vocab_size=tok.vocab_size)["num_blocks"] == str(model.encoder.num_blocks + 2)
    path = tmp_path / "fused.onnx"
    _export(w, w.example_inputs(), path, input_names=["x", "offset", "required_cache_size", "attn_cache",
                                                      "conv_cache", "attn_mask"],
            output_names=["log_probs", "next_att_cache", "next_conv_cache"], dynamic_shapes=None,
            metadata={}, optimize=False)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    feats = compute_fbank(noise_utterance(1.5, sr=16000, seed=3))
    _, offset, req, att, cnn, _ = (t.numpy() for t in w.example_inputs())
    state = model.init_state(1)
    stride, window = 4 * model.encoder.subsampling_rate, w.input_frames
    worst, chunks = 0.0, 0
    while (chunks + 1) * stride + window <= feats.shape[0]:
        piece = feats[chunks * stride : chunks * stride + window][None]
        mask = np.ones((1, 1, w.required + 4), dtype=bool)
        mask[..., : max(w.required - chunks * 4, 0)] = False  # sherpa-onnx's mask
        lp, att, cnn = sess.run(None, {"x": piece.numpy(), "offset": offset, "required_cache_size": req,
                                       "attn_cache": att, "conv_cache": cnn, "attn_mask": mask})
        with torch.no_grad():
            ref, state = model.forward_chunk(piece, state, chunk_size=4, left_chunks=2)
        worst = max(worst, float(np.abs(lp - ref.ctc_log_probs.numpy()).max()))
        chunks += 1
    assert chunks > 4 and worst < 1e-3, (chunks, worst)


def test_missing_export_and_bad_options(tmp_path: Path) -> None:
    from qifusion.cli import build_parser
    from qifusion.decode.recognizer import Recognizer
    from qifusion.export.onnx_export import export_model

    model_dir = make_random_model_dir(tmp_path / "m")
    with pytest.raises(UserError, match="qifusion export --model"):
        Recognizer.from_model_dir(model_dir, backend="onnx")
    with pytest.raises(UserError, match="--left-chunks > 0"):
        export_model(model_dir=model_dir, out_dir=tmp_path / "o", int8=False, left_chunks=0)
    args = build_parser().parse_args(["export", "--model", "m", "--out", "o"])
    assert (args.chunk_size, args.left_chunks, args.int8) == (16, 4, False)


def test_lm_streaming_onnx_equals_torch(exported: Path, tiny_model_dir: Path, synth_corpus: Path,
                                        utterances: list[tuple[str, str, np.ndarray]],
                                        tmp_path: Path) -> None:
    """The word-LM search (lm_beam) on the ONNX backend's chunks gives the torch backend's finals."""
    from lm_fixtures import write_lm_dir

    from qifusion.decode.options import LmOptions
    from qifusion.decode.recognizer import Recognizer
    from qifusion.lm.build import read_sentences

    words = sorted({w for s in read_sentences(synth_corpus / "train") for w in s.split()})
    lm_dir = write_lm_dir(tmp_path / "lm", words)
    texts = {}
    for backend, path in (("torch", tiny_model_dir), ("onnx", exported)):
        rec = Recognizer.from_model_dir(path, chunk_size=CHUNK, left_chunks=LEFT, mode="lm_beam",
                                        backend=backend, lm=str(lm_dir),
                                        lm_options=LmOptions(lm_weight=0.5, word_score=1.0))
        texts[backend] = []
        for _, _, samples in utterances[-4:]:  # training utterances: the tiny model knows their words
            s = rec.create_stream()
            s.accept_waveform(16000, samples)
            s.input_finished()
            while rec.is_ready(s):
                rec.decode(s)
            texts[backend].append(s.result.text)
    assert texts["onnx"] == texts["torch"]
    assert any(texts["torch"]) and all(set(t.split()) <= set(words) for t in texts["torch"])


def _protocol_run(model: object, feats: torch.Tensor, geom: object) -> tuple[list[torch.Tensor], object]:
    """Two streams chunk by chunk through nothing but the DecodingModel protocol; the states are split
    and re-joined after every chunk (as the Recognizer batches streams). Returns the CTC outputs."""
    state = model.init_state(2)
    outs, start = [], 0
    while n := geom.next_chunk(feats.shape[1] - start, finished=True):
        res, state = model.step(feats[:, start : start + n], state, geom)
        state = type(state).stack(list(reversed(state.unstack())))  # swap the streams ...
        state = type(state).stack(list(reversed(state.unstack())))  # ... and back
        outs.append(res.ctc_log_probs)
        start += geom.stride
    return outs, res


def test_every_backend_satisfies_the_protocol(exported: Path, tiny_model_dir: Path,
                                              utterances: list[tuple[str, str, np.ndarray]]) -> None:
    """The torch model and the ONNX backend (float and int8) are DecodingModels with StreamStateLike
    states, share one chunk geometry, and give the same outputs through the protocol alone."""
    from qifusion.data.features import compute_fbank
    from qifusion.decode.backend import load_for_decoding
    from qifusion.models.protocol import DecodingModel, StreamStateLike

    backends = {"torch": load_for_decoding(tiny_model_dir).model,
                "onnx": load_for_decoding(exported, backend="onnx").model,
                "onnx-int8": load_for_decoding(exported / "int8", backend="onnx").model}
    assert not isinstance(object(), DecodingModel)  # the check can fail
    feats = [compute_fbank(u[2]) for u in utterances[:2]]
    n = min(f.shape[0] for f in feats)
    x = torch.stack([f[:n] for f in feats])
    geoms = {name: m.chunk_geometry(CHUNK, LEFT) for name, m in backends.items()}
    assert len(set(geoms.values())) == 1, geoms
    results = {}
    with torch.no_grad():
        for name, m in backends.items():
            assert isinstance(m, DecodingModel), name
            assert isinstance(m.init_state(1), StreamStateLike), name
            assert m.has_decoder and m.aid_pooling == backends["torch"].aid_pooling, name
            results[name] = _protocol_run(m, x, geoms[name])
    ref, ref_last = results["torch"]
    for name, (outs, last) in results.items():
        assert [o.shape for o in outs] == [o.shape for o in ref], name
        tol = 1e-3 if name == "onnx" else 0.5  # int8 weights: close, not equal
        assert max(float((a - b).abs().max()) for a, b in zip(outs, ref)) < tol, name
        assert float((last.accent_utt - ref_last.accent_utt).abs().max()) < (1e-4 if name == "onnx" else 0.1)
    hyps = [[[3, 4, 5], [6]], [[7]]]
    mem, lens = torch.randn(2, 9, backends["torch"].encoder.output_size), torch.tensor([9, 6])
    t_scores = backends["torch"].attention_scores(mem, lens, hyps)
    o_scores = backends["onnx"].attention_scores(mem, lens, hyps)
    assert all(torch.allclose(a, b, atol=1e-3) for a, b in zip(t_scores, o_scores))


def test_onnx_encode_batches_utterances_of_any_length(exported: Path,
                                                      utterances: list[tuple[str, str, np.ndarray]]) -> None:
    """The ONNX backend's offline encode runs all utterances as one batch of streams; each equals the
    utterance encoded alone (different lengths: shorter ones end early, their frames masked)."""
    from qifusion.data.features import compute_fbank
    from qifusion.export.onnx_backend import load_onnx_model

    model = load_onnx_model(exported).model
    feats = [compute_fbank(u[2]) for u in utterances[:3]]
    feats[1] = feats[1][: 2 * model.geometry.stride + 3]  # a short one: two chunks and a short tail
    lens = torch.tensor([f.shape[0] for f in feats])
    assert len(set(lens.tolist())) == 3
    batch = model.encode(torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lens)
    for b, f in enumerate(feats):
        one = model.encode(f[None], lens[b : b + 1])
        n = int(one.lens[0])
        assert int(batch.lens[b]) == n
        assert torch.allclose(batch.ctc_log_probs[b, :n], one.ctc_log_probs[0], atol=1e-4)
        assert torch.allclose(batch.memory[b, :n], one.memory[0], atol=1e-4)
        assert torch.allclose(batch.accent_utt[b], one.accent_utt[0], atol=1e-5)
        assert not batch.ctc_log_probs[b, n:].any()
