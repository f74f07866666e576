"""benchmarks/speed/summary.py: the speed study's Markdown from (fake) result files; no timing here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.speed import summary as summary_module


@pytest.fixture(scope="module")
def summary():
    return summary_module


def _write(d: Path, name: str, obj: object) -> None:
    (d / name).write_text(json.dumps(obj))


def _fake_results(d: Path) -> None:
    run = {"mode": "ctc_greedy", "chunk_size": -1, "left_chunks": -1, "backend": "torch", "cer": 12.34}
    _write(d, "speed_rtf.json", {
        "command": "python benchmarks/speed/rtf.py --fake 1", "repeats": 3,
        "machine": {"cpu_count": 2, "torch": "2.13.0", "onnxruntime": "1.32.0"},
        "data": {"source": "data/x", "num_utts": 80, "audio_s": 240.5},
        "runs": [{**run, "threads": 1, "rtf": 0.0123}, {**run, "threads": 2, "rtf": 0.0077},
                 {**run, "backend": "onnx_int8", "chunk_size": 16, "left_chunks": 4,
                  "mode": "attention_rescoring", "threads": 1, "rtf": 0.0456}],
        "fbank": [{"threads": 1, "offline_audio_s_per_s": 812.5, "online_audio_s_per_s": 701.25,
                   "audio_s": 240.5}],
        "memory": [{"what": "decode torch", "threads": 1, "peak_rss_mb": 381.4}],
    })
    cmd = "python benchmarks/speed/train_throughput.py --fake 2"
    _write(d, "speed_train.json", {"command": cmd, "runs": [
        {"config": "conf/qifusion_small.yaml", "threads": 2, "audio_per_s": 17.25,
         "audio_per_s_with_loading": 16.5, "step_s_median": 2.875, "batch_audio_s_median": 49.5, "steps": 5,
         "peak_rss_mb": 1234.5}]})
    (d / "latency.jsonl").write_text(json.dumps({
        "chunk_size": 16, "chunk_audio_ms": 640.0, "per_chunk_compute_ms_median": 16.0,
        "first_partial_latency_audio_ms": 660.0, "final_latency_wall_ms_median": 23.42, "audio_s": 5.5,
        "threads": 1, "backend": "torch", "command": "python benchmarks/speed/latency.py --fake 3"}) + "\n")
    _write(d, "prefix_beam.json", {"threads": 1, "results": [
        {"dist": "peaky", "batch": 16, "frames": 250, "vocab": 500, "beam": 10, "floor": None,
         "vectorised_ms": 4.5, "loop_ms": 90.0, "ratio_loop_over_vectorised": 20.0, "same_nbest": True}]})
    _write(d, "encoder_small.json", {"train_step_s": 1.115, "infer_10s_s": 0.0735, "stream_10s_s": 0.25,
                                     "per_chunk_ms": 19.75, "params_M": 6.64})
    _write(d, "serve_load_torch.json", {"chunk_size": 16, "levels": [
        {"streams": 8, "final_latency_ms_p50": 62.5, "final_latency_ms_p95": 85.25, "rtf": 0.0432,
         "realtime_ok": True}]})


def test_tables_contain_the_numbers(summary, tmp_path: Path) -> None:
    _fake_results(tmp_path)
    md = summary.speed_markdown(tmp_path)
    assert md.startswith("## Speed\n")
    # RTF: one row per (backend, context, mode), one column per thread count, CER last
    assert "| backend | context | mode | RTF 1 thr | RTF 2 thr | CER % |" in md
    assert "| torch | full | ctc_greedy | 0.0123 | 0.0077 | 12.3 |" in md
    assert "| onnx_int8 | chunk 16, left 4 | attention_rescoring | 0.0456 | - | 12.3 |" in md
    assert "80 test utterances (240.5 s of audio" in md
    assert "Command: `python benchmarks/speed/rtf.py --fake 1`" in md
    # features, training, memory
    assert "| 1 | 812.5 | 701.2 | 240.5 |" in md  # 701.25 -> 701.2 (round half to even)
    assert "| qifusion_small | 2 | 17.2 | 16.5 | 2.88 | 49.5 | 5 | 1234.5 |" in md
    assert "Command: `python benchmarks/speed/train_throughput.py --fake 2`" in md
    assert "| decode torch | 1 | 381.4 |" in md and "| train qifusion_small | 2 | 1234.5 |" in md
    # streaming: compute per chunk vs chunk duration (16 / 640 = 0.025), latencies
    assert "| torch | 16 | 640.0 | 16.0 | 0.025 | 1 |" in md
    assert "| torch | 16 | 660.0 | 23.4 | 5.5 |" in md
    assert "`python benchmarks/speed/latency.py --fake 3`" in md
    # prefix beam speed-up; server load
    assert "| peaky | 16 | off | 4.5 | 90.0 | 20.0 | yes |" in md
    assert "| 8 | 62.5 | 85.2 | 0.0432 | yes |" in md
    # encoder vs WeNet: ratio = ours / guide figure (1.115 / 2.23 = 0.5; 19.75 / 39.5 = 0.5)
    assert "| small | train step s | 1.11 | 2.23 | 0.5 |" in md
    assert "| small | chunk 16, ms/chunk | 19.8 | 39.5 | 0.5 |" in md
    assert "| small | full context 10 s, s | 0.0735 | 0.147 | 0.5 |" in md
    # what is still missing names its command
    assert "run `python -m benchmarks.speed.encoder --size base`" in md
    assert "No result `serve_load_onnx.json` yet" in md


def test_missing_files_name_their_commands(summary, tmp_path: Path) -> None:
    md = summary.speed_markdown(tmp_path)
    assert "|" not in md  # no table at all
    for name, cmd in summary.COMMANDS.items():
        assert f"No result `{name}` yet: run `{cmd}`" in md
    assert "benchmarks/speed/run_all.sh" in md


def test_unexpected_layout_is_reported_not_raised(summary, tmp_path: Path) -> None:
    _write(tmp_path, "speed_train.json", {"runs": [{"threads": 1}]})
    (tmp_path / "prefix_beam.json").write_text("{not json")
    md = summary.speed_markdown(tmp_path)
    assert "`speed_train.json` has an unexpected layout (KeyError" in md
    assert "No result `prefix_beam.json` yet" in md
