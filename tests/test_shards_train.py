"""Training from tar shards: the streaming loader (same utterances and features as the file loader,
disjoint equal DDP shares, exact resume position) and `qifusion train` on a sharded data dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import qifusion.data.shard_loader as shard_loader
from qifusion.cli import main
from qifusion.config import DataConfig, SpecAugConfig
from qifusion.data.dataset import build_loader
from qifusion.data.manifest import load_accents, load_data_dir
from qifusion.data.shard_loader import build_shard_loader
from qifusion.data.shards import read_shard_meta, write_shards
from qifusion.data.tokenizer import Tokenizer
from qifusion.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
SEED = 3


@pytest.fixture(scope="module")
def sharded(synth_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with only shards: train/shards (4 shards of 18 utterances), dev/shards (1 shard)."""
    root = tmp_path_factory.mktemp("sharded") / "data"
    write_shards(load_data_dir(synth_corpus / "train"), root / "train" / "shards", num_shards=4, seed=0)
    write_shards(load_data_dir(synth_corpus / "dev"), root / "dev" / "shards", num_shards=1, seed=0)
    return root


@pytest.fixture(scope="module")
def setup(synth_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    utts = load_data_dir(synth_corpus / "train")
    tok = Tokenizer.build([u.text for u in utts], token_type="char", workdir=tmp_path_factory.mktemp("tok"))
    cfg = DataConfig(max_duration=8.0, speed_perturb=[0.9, 1.0, 1.1], dither=1.0, shuffle_buffer=4,
                     spec_aug=SpecAugConfig(max_time_width=10))
    return utts, tok, load_accents(utts), cfg


def _shard_loader(sharded: Path, setup, *, rank: int = 0, world_size: int = 1, train: bool = True):
    _, tok, accents, cfg = setup
    return build_shard_loader(sharded / "train" / "shards", cfg=cfg, tokenizer=tok, accents=accents,
                              train=train, seed=SEED, rank=rank, world_size=world_size)


def test_shard_loader_yields_the_file_loaders_utterances_and_features(sharded: Path, setup) -> None:
    utts, tok, accents, cfg = setup
    files = build_loader(utts, cfg=cfg, tokenizer=tok, accents=accents, train=True, seed=SEED)
    shards = _shard_loader(sharded, setup)
    for loader in (files, shards):
        loader.set_epoch(2)
    ids = [i for b in shards.batch_utt_ids() for i in b]
    file_ids = [i for b in files.batch_utt_ids() for i in b]
    assert sorted(ids) == sorted(file_ids) == sorted(u.utt_id for u in utts)
    by_id = {e.utt.utt_id: e for e in files._maker.entries}
    seen = []
    for batch in shards:
        assert not batch.failed
        planned = sum(by_id[i].duration for i in batch.utt_ids)  # before silence padding and speed
        assert planned <= cfg.max_duration or len(batch) == 1
        for k, utt_id in enumerate(batch.utt_ids):  # same augmented features (speed, dither, SpecAugment)
            ref, _ = files._maker.features(by_id[utt_id], 2)
            assert torch.equal(batch.feats[k, : int(batch.feats_lens[k])], ref)
            assert batch.tokens[k, : int(batch.token_lens[k])].tolist() == by_id[utt_id].tokens
        seen += batch.utt_ids
    assert seen == ids
    epoch2 = shards.batch_utt_ids()
    shards.set_epoch(3)
    assert shards.batch_utt_ids() != epoch2  # the order is re-drawn per epoch


def test_two_ranks_get_disjoint_utterances_and_equal_batch_counts(sharded: Path, setup) -> None:
    utts = setup[0]
    for epoch in (1, 2):
        ranks = [_shard_loader(sharded, setup, rank=r, world_size=2) for r in (0, 1)]
        for loader in ranks:
            loader.set_epoch(epoch)
        ids = [{i for b in loader.batch_utt_ids() for i in b} for loader in ranks]
        assert len(ranks[0]) == len(ranks[1]) >= 1
        assert not ids[0] & ids[1] and ids[0] | ids[1] <= {u.utt_id for u in utts}
        for r, loader in enumerate(ranks):  # each rank reads only its shards
            mine = {m.utt_id for s in loader.rank_shards(r) for m in read_shard_meta(loader.paths[s])}
            assert ids[r] <= mine
            assert [b.utt_ids for b in loader] == loader.batch_utt_ids()
    evals = [_shard_loader(sharded, setup, rank=r, world_size=2, train=False) for r in (0, 1)]
    got = sorted(i for loader in evals for b in loader.batch_utt_ids() for i in b)
    assert got == sorted(u.utt_id for u in utts)  # evaluation keeps every utterance
    with pytest.raises(DataError, match="4 shard\\(s\\) for 5 ranks"):
        _shard_loader(sharded, setup, rank=0, world_size=5)


def test_resume_continues_at_the_next_batch_without_decoding_skipped_audio(
        sharded: Path, setup, monkeypatch: pytest.MonkeyPatch) -> None:
    full = _shard_loader(sharded, setup)
    full.set_epoch(2)
    ref = list(full)
    assert len(ref) >= 4
    cut = _shard_loader(sharded, setup)
    cut.set_epoch(2)
    it = iter(cut)
    next(it), next(it)
    state = json.loads(json.dumps(cut.state_dict()))  # plain data, as in a checkpoint
    assert state["pos"] == 2 and state["kind"] == "shards"
    decoded: list[str] = []
    real = shard_loader.decode_audio

    def counting(data: bytes, *, path, key):
        decoded.append(key)
        return real(data, path=path, key=key)

    monkeypatch.setattr(shard_loader, "decode_audio", counting)
    resumed = _shard_loader(sharded, setup)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)
    rest = list(resumed)
    assert [b.utt_ids for b in rest] == [b.utt_ids for b in ref[2:]]
    for a, b in zip(rest, ref[2:], strict=True):
        assert torch.equal(a.feats, b.feats) and torch.equal(a.tokens, b.tokens)
    assert len(decoded) == sum(len(b) for b in ref[2:])  # skipped batches were read, not decoded


def test_metadata_without_sidecar_is_scanned_from_the_tar(sharded: Path, tmp_path: Path) -> None:
    import shutil

    src = sharded / "train" / "shards" / "shard-000001.tar"
    shutil.copy(src, tmp_path / src.name)
    assert read_shard_meta(tmp_path / src.name) == read_shard_meta(src) and read_shard_meta(src)


def test_train_command_streams_a_sharded_data_dir(sharded: Path, synth_corpus: Path, tmp_path: Path) -> None:
    from qifusion.data.cmvn import cmvn_from_utterances, dither_floor, load_cmvn, load_floor

    exp = tmp_path / "exp"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = main(["train", "--config", str(ROOT / "conf" / "tiny.yaml"), "--data", str(sharded), "--exp",
                   str(exp), "--set", "train.max_steps=3", "--set", "data.max_duration=15"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    log = (exp / "train.log").read_text()
    assert "train: streaming tar shards" in log and "dev: streaming tar shards" in log
    card = json.loads((exp / "final" / "card.json").read_text())
    assert card["steps"] == 3 and card["train_utts"] == 18 and "dev_loss" in card["dev"]
    assert (exp / "accents.txt").read_text().split() == ["en-029", "en-gb-scotland", "en-us"]
    mean, istd = load_cmvn(exp)  # CMVN from the shards' audio: all 18 utterances, as from the files
    floor = load_floor(exp)  # the input floor of tiny.yaml's dither, applied before the statistics
    assert floor is not None and torch.equal(floor, dither_floor(1.0))
    ref_mean, ref_istd, _ = cmvn_from_utterances(load_data_dir(synth_corpus / "train"), floor=floor)
    assert torch.allclose(mean, ref_mean, atol=1e-4) and torch.allclose(istd, ref_istd, atol=1e-4)
