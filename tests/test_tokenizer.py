"""Tokenizer: char units (English, Mandarin, mixed), BPE, save/load, unknowns."""

import pytest

from qifusion.data.tokenizer import SPACE, Tokenizer, char_split
from qifusion.errors import DataError, UserError

EN = ["it's a fine day", "we don't know  what they'll say", "the quick brown fox"]
ZH = ["今天天气很好", "我们去公园吧"]


def test_char_units_english():
    tok = Tokenizer.build(EN)
    assert tok.units[:2] == ["<blank>", "<unk>"] and tok.units[-1] == "<sos/eos>"
    assert tok.vocab_size == 2 + 26 + 2 + 1  # a-z, apostrophe, ▁ always present for English
    assert tok.sos_eos_id == tok.vocab_size - 1 and tok.blank_id == 0 and tok.unk_id == 1
    ids = tok.encode("It's  OK ")
    assert [tok.id2token(i) for i in ids] == ["i", "t", "'", "s", SPACE, "o", "k"]
    assert tok.decode(ids) == "it's ok"
    for text in EN:
        assert tok.decode(tok.encode(text)) == " ".join(text.split())


def test_char_units_mandarin_and_mixed():
    tok = Tokenizer.build([*ZH, "hello world"])
    assert char_split("今天 很好") == ["今", "天", "很", "好"]
    assert char_split("我 love 你") == ["我", "l", "o", "v", "e", "你"]
    assert char_split("hi there 你好") == ["h", "i", SPACE, "t", "h", "e", "r", "e", "你", "好"]
    ids = tok.encode("今天很好")
    assert len(ids) == 4 and tok.unk_id not in ids
    assert tok.decode(ids) == "今天很好"
    assert tok.decode(tok.encode("我们 hello")) == "我们hello"


def test_unknown_chars_map_to_unk():
    tok = Tokenizer.build(ZH)
    assert "a" not in tok.units  # no Latin letters in a Mandarin-only corpus
    assert tok.encode("今x天") == [tok.token2id("今"), tok.unk_id, tok.token2id("天")]
    assert tok.decode([0, tok.token2id("今"), 0, tok.sos_eos_id]) == "今"


def test_save_load_units_txt(tmp_path):
    tok = Tokenizer.build(EN + ZH)
    tok.save(tmp_path)
    lines = (tmp_path / "units.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["<blank> 0", "<unk> 1"] and lines[-1] == f"<sos/eos> {tok.vocab_size - 1}"
    loaded = Tokenizer.load(tmp_path)
    assert loaded.units == tok.units and loaded.token_type == "char"
    assert loaded.encode("it's 今天") == tok.encode("it's 今天")


def test_bpe_roundtrip(tmp_path):
    texts = [f"{w} {v} isn't it" for w in ("the", "cat", "sat", "on", "mat", "dog") for v in ("ran", "sat")]
    tok = Tokenizer.build(texts, token_type="bpe", bpe_vocab_size=40, workdir=tmp_path / "work")
    assert tok.token_type == "bpe"
    assert tok.units[:2] == ["<blank>", "<unk>"] and tok.units[-1] == "<sos/eos>"
    ids = tok.encode("the dog sat isn't it")
    assert tok.unk_id not in ids and len(ids) < len("the dog sat isn't it")  # pieces longer than chars
    assert tok.decode(ids) == "the dog sat isn't it"
    tok.save(tmp_path / "model")
    assert (tmp_path / "model" / "bpe.model").exists()
    loaded = Tokenizer.load(tmp_path / "model")
    assert loaded.token_type == "bpe" and loaded.units == tok.units
    assert loaded.encode("the cat ran") == tok.encode("the cat ran")


def test_errors(tmp_path):
    with pytest.raises(DataError, match="no non-empty"):
        Tokenizer.build(["", "  "])
    with pytest.raises(UserError, match="token_type"):
        Tokenizer.build(EN, token_type="word")
    with pytest.raises(UserError, match="not found"):
        Tokenizer.load(tmp_path)
    (tmp_path / "units.txt").write_text("<blank> 0\n<unk> 2\n")
    with pytest.raises(UserError, match=r"units\.txt:2"):
        Tokenizer.load(tmp_path)
