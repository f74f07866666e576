"""LM decoding (lm_beam / lm_rescoring): streaming = offline, OOV and hotwords, bad input, `qifusion lm`.

LM fixtures are written by hand (tests/lm_fixtures.py); the lmplz test needs KenLM's tools (make setup).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from qifusion.data.features import compute_fbank
from qifusion.data.tokenizer import Tokenizer
from qifusion.decode.lm_search import LexiconLm, lm_beam
from qifusion.decode.offline import decode_features
from qifusion.decode.options import LmOptions
from qifusion.decode.recognizer import Recognizer
from qifusion.errors import UserError
from qifusion.lm.files import hotwords_from_json, parse_hotwords, read_hotwords
from tests.lm_fixtures import WORDS, write_lm_dir
from tests.recognizer_helpers import make_random_model_dir, noise_utterance, run_stream


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = make_random_model_dir(tmp_path_factory.mktemp("lm_model") / "m", seed=3)
    write_lm_dir(d / "lm")
    return d


def spelled_log_probs(tok: Tokenizer, text: str, *, frames_per_unit: int = 3) -> torch.Tensor:
    """CTC log-probs (T, V) that spell ``text``: each unit peaks for some frames, blanks in between."""
    rows = []
    for u in tok.encode(text):
        for k in range(frames_per_unit + 1):
            p = torch.full((tok.vocab_size,), 0.01)
            p[u if k < frames_per_unit else tok.blank_id] = 1.0
            rows.append(p / p.sum())
    return torch.stack(rows).log()


# ---- streaming = offline -------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "chunk"), [("lm_beam", 4), ("lm_rescoring", 8)])
def test_streaming_equals_chunk_masked_offline(model_dir: Path, mode: str, chunk: int) -> None:
    rec = Recognizer.from_model_dir(model_dir, chunk_size=chunk, mode=mode)
    for seed in range(3):
        audio = noise_utterance(2.0 + seed, sr=16000, seed=seed)
        s = rec.create_stream()
        partials = []
        i = 0
        while i < audio.shape[0]:
            s.accept_waveform(16000, audio[i : i + 3000])
            i += 3000
            while rec.is_ready(s):
                rec.decode(s)
            partials.append(s.result.text)
        s = run_stream(rec, audio, 16000, seed=seed, stream=None)
        hyp, _, _ = decode_features(rec, torch.as_tensor(compute_fbank(audio, sample_rate=16000)),
                                    chunk_size=chunk, left_chunks=-1)
        assert s.result.is_final
        assert s.result.text == rec.tokenizer.decode(hyp.tokens)
        assert s.result.text, "the peaky random model should output some words"
        # OOV behaviour: lexicon mode outputs lexicon words only (partials may end in an unfinished word)
        assert set(s.result.text.split()) <= set(WORDS)
        assert all(set(p.split()[:-1]) <= set(WORDS) for p in partials)
        assert [w.word for w in s.result.words] == s.result.text.split()


def test_step_split_does_not_change_result(model_dir: Path) -> None:
    tok = Tokenizer.load(model_dir)
    lm = LexiconLm(model_dir / "lm", tok)
    lp = torch.randn(40, tok.vocab_size).log_softmax(-1)
    whole = lm_beam(lp[None], torch.tensor([40]), lm)[0]
    s = lm.new_search()
    for a in range(0, 40, 7):
        s.step(lp[a : a + 7])
    s.finish()
    assert [h.tokens for h in s.nbest()] == [h.tokens for h in whole]


# ---- OOV and hotwords ----------------------------------------------------------------------------
def test_oov_word_needs_a_hotword(model_dir: Path) -> None:
    tok = Tokenizer.load(model_dir)
    lp = spelled_log_probs(tok, "the zebra jumps")  # 'zebra' is spellable but not in the lexicon
    lens = torch.tensor([lp.shape[0]])
    lm = LexiconLm(model_dir / "lm", tok)
    plain = tok.decode(lm_beam(lp[None], lens, lm)[0][0].tokens)
    assert "zebra" not in plain.split() and set(plain.split()) <= set(WORDS)
    hw = tuple(parse_hotwords(["zebra 8"], source="test"))
    biased = tok.decode(lm_beam(lp[None], lens, lm, hw)[0][0].tokens)
    assert biased == "the zebra jumps"


def test_hotword_boost_picks_the_rare_word(model_dir: Path) -> None:
    tok = Tokenizer.load(model_dir)
    lm_dir = write_lm_dir(model_dir.parent / "lm_rare", probs={"box": 1e-3, "fox": 0.3})
    lm = LexiconLm(lm_dir, tok, LmOptions(lm_weight=1.0))
    lp = spelled_log_probs(tok, "the box")
    b, f = tok.token2id("b"), tok.token2id("f")
    lp[16:19, f] = lp[16:19, b]  # "b" (unit 5 of 7) sounds like "f" as well
    lens = torch.tensor([lp.shape[0]])
    assert tok.decode(lm_beam(lp[None], lens, lm)[0][0].tokens) == "the fox"
    hw = tuple(parse_hotwords(["box\t4"], source="t"))
    assert tok.decode(lm_beam(lp[None], lens, lm, hw)[0][0].tokens) == "the box"


def test_hotword_parsing_errors(tmp_path: Path) -> None:
    empty = tmp_path / "hot.txt"
    empty.write_text("\n# nothing\n")
    with pytest.raises(UserError, match=r"hot\.txt: the hotword list is empty"):
        read_hotwords(empty)
    bad = tmp_path / "bad.txt"
    bad.write_text("zebra 2\nquick 1e6\n")
    with pytest.raises(UserError, match=r"bad\.txt:2: boost of 'quick' must be in"):
        read_hotwords(bad)
    with pytest.raises(UserError, match="not found"):
        read_hotwords(tmp_path / "missing.txt")
    with pytest.raises(UserError, match=r"field 'hotwords\[1\]\.boost'"):
        hotwords_from_json(["a", {"word": "b", "boost": "x"}])
    with pytest.raises(UserError, match="field 'hotwords': the hotword list is empty"):
        hotwords_from_json([])
    got = hotwords_from_json(["Big Dog", {"word": "zebra", "boost": 2}])
    assert [(h.text, h.boost) for h in got] == [("big dog", 2.0), ("zebra", 2.0)]


# ---- bad LM input --------------------------------------------------------------------------------
def test_bad_lm_files_name_the_file(model_dir: Path, tmp_path: Path) -> None:
    tok = Tokenizer.load(model_dir)
    with pytest.raises(UserError, match=r"LM dir .*nowhere not found"):
        Recognizer.from_model_dir(model_dir, mode="lm_beam", lm=str(tmp_path / "nowhere"))
    corrupt = write_lm_dir(tmp_path / "corrupt")
    (corrupt / "lm.arpa").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match=r"corrupt/lm\.arpa is neither a KenLM binary nor an ARPA"):
        LexiconLm(corrupt, tok)
    broken = write_lm_dir(tmp_path / "broken")
    arpa = (broken / "lm.arpa").read_text()
    (broken / "lm.arpa").write_text(arpa.replace("ngram 1=14", "ngram 1=40"))
    with pytest.raises(UserError, match=r"broken/lm\.arpa could not be loaded"):
        LexiconLm(broken, tok)
    other = write_lm_dir(tmp_path / "other")
    (other / "lexicon.txt").write_text("the t h e\nnaïve n a ï v e\n")
    with pytest.raises(UserError, match=r"other/lexicon\.txt:2: word 'naïve' is spelled with 'ï'"):
        LexiconLm(other, tok)
    with pytest.raises(UserError, match="lm_weight must be in"):
        LmOptions(lm_weight=1e9)
    hw = tuple(parse_hotwords(["fox"], source="t"))
    with pytest.raises(UserError, match="hotwords need an LM decoding mode"):
        Recognizer.from_model_dir(model_dir, mode="ctc_prefix_beam").create_stream(hotwords=hw)
    with pytest.raises(UserError, match="hotwords need an LM decoding mode"):
        Recognizer.from_model_dir(model_dir, mode="attention_rescoring", hotwords=hw)


def test_decode_dir_reports_the_lm(model_dir: Path, tmp_path: Path) -> None:
    import soundfile as sf

    from qifusion.decode.run import decode_dir

    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        sf.write(tmp_path / f"u{i}.wav", noise_utterance(1.5, sr=16000, seed=i), 16000)
    (data / "wav.scp").write_text("".join(f"u{i} {tmp_path / f'u{i}.wav'}\n" for i in range(2)))
    (data / "text").write_text("u0 the fox\nu1 the lazy dog\n")
    rep = decode_dir(model_dir=model_dir, data_dir=data, out_dir=tmp_path / "out", mode="lm_rescoring",
                     device="cpu", progress=False, lm_options=LmOptions(lm_weight=0.5))
    assert rep["mode"] == "lm_rescoring" and rep["lm"]["lm_weight"] == 0.5
    assert rep["lm"]["dir"] == str(model_dir / "lm") and rep["lm"]["lexicon_words"] == len(WORDS)
    assert "lm_weight 0.5" in (tmp_path / "out" / "report.md").read_text()


# ---- serve: hotwords per session, a bad session does not stop the others ---------------------------
def test_serve_hotwords_field_and_bad_sessions(model_dir: Path) -> None:
    import asyncio

    from websockets.asyncio.client import connect

    from qifusion.serve import protocol
    from qifusion.serve.server import ServerConfig, ServerThread, load_recognizer
    from tests.test_serve import END, collect, finals, to_pcm

    cfg = ServerConfig(model_dir=model_dir, port=0, chunk_size=8, mode="lm_beam")
    rec = load_recognizer(cfg)
    audio = noise_utterance(2.0, sr=16000, seed=1)
    hw = tuple(parse_hotwords(["zebra 5"], source="t"))
    want = run_stream(rec, audio, 16000, stream=rec.create_stream(hotwords=hw)).result.text

    async def session(start: dict) -> list[dict]:
        async with connect(srv.url) as ws:
            await ws.send(json.dumps(start))
            first = protocol.parse_server_message(await ws.recv())
            if first["status"] != "ok":
                return [first]
            for i in range(0, len(audio), 1600):
                await ws.send(to_pcm(audio[i : i + 1600]))
            await ws.send(END)
            return await collect(ws)

    with ServerThread(cfg, recognizer=rec) as srv:
        async def main():
            return await asyncio.gather(
                session({"signal": "start", "hotwords": [{"word": "zebra", "boost": 5}]}),
                session({"signal": "start", "hotwords": []}),
                session({"signal": "start", "hotwords": [{"word": "zebra", "boost": 1e9}]}),
                session({"signal": "start", "hotwords": ["naïve"]}),
            )

        good, empty, absurd, bad_char = asyncio.run(main())
    assert finals(good) == [want]
    assert empty[0]["status"] == "failed" and "hotword list is empty" in empty[0]["message"]
    assert absurd[0]["status"] == "failed" and "boost of 'zebra'" in absurd[0]["message"]
    assert bad_char[0]["status"] == "failed" and "'naïve'" in bad_char[0]["message"]


# ---- qifusion lm ---------------------------------------------------------------------------------
def test_lm_command_refuses_eval_sentences(model_dir: Path, tmp_path: Path) -> None:
    from qifusion.cli import main

    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "text").write_text("u1 The quick brown fox\nu2 over the dog\n")
    text = tmp_path / "lm.txt"
    text.write_text("the lazy dog\nthe  QUICK brown fox\nover the dog\n")
    with pytest.raises(UserError, match=r"lm\.txt: 2 of its sentences are sentences of the excluded"):
        from qifusion.lm.build import build_lm

        build_lm(model_dir=model_dir, texts=[text], exclude=[dev], out_dir=tmp_path / "x")
    assert main(["lm", "--model", str(model_dir), "--text", str(tmp_path / "none.txt")]) == 2


def _have_kenlm_tools() -> bool:
    from qifusion.lm.build import find_tool

    try:
        find_tool("lmplz")
        find_tool("build_binary")
    except UserError:
        return False
    return True


@pytest.mark.skipif(not _have_kenlm_tools() and not os.environ.get("CI"),
                    reason="KenLM tools not built here (make setup builds them; CI always runs this)")
def test_lm_command_builds_a_usable_lm(model_dir: Path, tmp_path: Path) -> None:
    from qifusion.lm.build import build_lm

    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox\njumps over the lazy dog\nthe dog's back\nthe naïve fox\n")
    meta = build_lm(model_dir=model_dir, texts=[text], out_dir=tmp_path / "lm", order=3)
    assert meta["lexicon_words"] == 10 and meta["oov_spelling"] == 1  # 'naïve' cannot be spelled
    assert (tmp_path / "lm" / "lm.bin").read_bytes().startswith(b"mmap lm http://kheafield.com/code")
    tok = Tokenizer.load(model_dir)
    lp = spelled_log_probs(tok, "the lazy dog")
    out = lm_beam(lp[None], torch.tensor([lp.shape[0]]), LexiconLm(tmp_path / "lm", tok))[0][0]
    assert tok.decode(out.tokens) == "the lazy dog"
    assert json.loads((tmp_path / "lm" / "lm.json").read_text())["order"] == 3
    assert np.isfinite(out.score)


def test_transcribe_cli_lm_and_hotword_errors(model_dir: Path, tmp_path: Path, capsys) -> None:
    import soundfile as sf

    from qifusion.cli import main

    wav = tmp_path / "a.wav"
    sf.write(wav, noise_utterance(1.5, sr=16000, seed=5), 16000)
    hot = tmp_path / "hot.txt"
    hot.write_text("zebra 2\n")
    base = ["transcribe", "--model", str(model_dir), "--mode", "lm_rescoring", "--chunk-size", "8"]
    assert main([*base, "--hotwords", str(hot), str(wav)]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert set(line["text"].split()) <= {*WORDS, "zebra"}
    for text, err in [("", "hot.txt: the hotword list is empty"),
                      ("zebra 99\n", "hot.txt:1: boost of 'zebra'")]:
        hot.write_text(text)
        assert main([*base, "--hotwords", str(hot), str(wav)]) == 2
        assert err in capsys.readouterr().err
    assert main([*base, "--lm", str(tmp_path / "nolm"), str(wav)]) == 2
    assert "nolm not found" in capsys.readouterr().err
