"""``qifusion export``: ONNX files for sherpa-onnx and for qifusion's own ONNX backend.

Layout of the export dir ``OUT`` (see docs/export.md)::

    OUT/model.onnx          sherpa-onnx wenet_ctc streaming CTC model (+ metadata it reads)
    OUT/tokens.txt          "unit id" per line, id 0 = <blank>
    OUT/encoder_chunk.onnx  full-model chunk step (encoder, LAF, AID, fusion, CTC; fixed-size caches)
    OUT/decoder.onnx        attention decoder log-probs (rescoring); r_decoder.onnx for U2++ models
    OUT/export.json         chunk size, left chunks, file names, source model dir
    OUT/config.yaml units.txt [bpe.model] accents.txt card.json [cmvn.json]   copied from the model dir
    OUT/int8/...            the same layout, dynamically quantised weights (``--int8``)

An export dir is self-contained: ``Recognizer.from_model_dir(OUT, backend="onnx")`` loads it, and so
does ``MODEL_DIR`` when the export was written to ``MODEL_DIR/onnx``. Every graph has fixed cache sizes
(``chunk_size * left_chunks`` frames), so the dynamo exporter sees no data-dependent slicing.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from qifusion.errors import UserError
from qifusion.fileio import atomic_write_bytes, atomic_write_text
from qifusion.models.geometry import DEFAULT_CHUNK

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1
OPSET = 18
COPIED = ("config.yaml", "units.txt", "bpe.model", "accents.txt", "card.json", "cmvn.json",
          "aid_calibration.json")
FILES = {"wenet_ctc": "model.onnx", "chunk": "encoder_chunk.onnx", "decoder": "decoder.onnx",
         "r_decoder": "r_decoder.onnx"}


def default_export_dir(model_dir: Path) -> Path:
    """Where ``qifusion export`` writes without ``--out``: ``MODEL/onnx``, where ``--backend onnx --model
    MODEL`` looks (``models/*/onnx/`` is git-ignored, so exports of shipped models stay out of git)."""
    return Path(model_dir) / "onnx"


def _progress(msg: str) -> None:
    print(f"qifusion export: {msg}", file=sys.stderr, flush=True)


def export_model(*, model_dir: Path, out_dir: Path | None = None, int8: bool = False,
                 chunk_size: int = DEFAULT_CHUNK,
                 left_chunks: int = 4, optimize: bool = True) -> None:
    """Export the model dir ``model_dir`` to ``out_dir`` (default ``MODEL/onnx``; and ``out_dir/int8``
    with ``int8``). Progress goes to stderr, one line per graph.

    ``chunk_size`` / ``left_chunks`` (output frames) are constants of every exported graph; sherpa-onnx
    must be run with the same values (its defaults are 16 and 4). ``optimize``: run the ONNX graph
    optimiser of the exporter (about half the export time; onnxruntime optimises at load anyway).
    """
    from qifusion.modeldir import load_model_dir

    if chunk_size <= 0 or left_chunks <= 0:
        raise UserError(f"export needs --chunk-size > 0 and --left-chunks > 0, got {chunk_size}, "
                        f"{left_chunks}")
    loaded = load_model_dir(Path(model_dir))
    model = loaded.model.float().eval()
    if not model.encoder.cfg.causal:
        raise UserError(f"{model_dir}: model.encoder.causal is false; only streaming models can be exported")
    out_dir = Path(out_dir) if out_dir is not None else default_export_dir(Path(model_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    n_graphs = 2 + sum(d is not None for d in (model.decoder, model.r_decoder))
    _progress(f"exporting {n_graphs} ONNX graphs of {model_dir} to {out_dir} (chunk size {chunk_size}, "
              f"{left_chunks} left chunks){'; then int8 copies' if int8 else ''}")
    vocab = loaded.tokenizer.vocab_size
    files = _export_graphs(model, out_dir, chunk_size=chunk_size, left_chunks=left_chunks, vocab_size=vocab,
                           optimize=optimize)
    _write_tokens(loaded.tokenizer, out_dir / "tokens.txt")
    _copy_model_files(Path(model_dir), out_dir)
    info = {"format": EXPORT_FORMAT, "chunk_size": chunk_size, "left_chunks": left_chunks, "int8": False,
            "files": files, "source": str(Path(model_dir).resolve()), "opset": OPSET}
    atomic_write_text(out_dir / "export.json", json.dumps(info, indent=1) + "\n")
    if int8:
        _progress(f"quantising to int8 -> {out_dir / 'int8'}")
        t0 = time.perf_counter()
        quantize_export(out_dir, out_dir / "int8")
        _progress(f"int8 copies written ({time.perf_counter() - t0:.1f} s)")
    print(f"qifusion export: wrote {', '.join(sorted(files.values()))} and tokens.txt to {out_dir}"
          + (f" (+ int8 copies in {out_dir / 'int8'})" if int8 else ""), file=sys.stderr)


def quantize_export(src: Path, dst: Path) -> None:
    """Write a dynamically quantised (int8 weights) copy of export dir ``src`` to ``dst``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    info = json.loads((src / "export.json").read_text())
    dst.mkdir(parents=True, exist_ok=True)
    for name in info["files"].values():
        with tempfile.TemporaryDirectory(dir=dst) as tmp:
            tmp_out = Path(tmp) / name
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # onnxruntime's "consider pre-processing" warning per file
            try:
                # 7-bit weights: onnxruntime's u8s8 kernels on AVX2 CPUs without VNNI (AMD EPYC here) sum
                # pairs in 16 bits (VPMADDUBSW) and saturate with full-range weights (onnxruntime's
                # quantization docs, "when and why do I need to try U8U8"); with 8-bit weights the int8
                # copy lost 1.2 CER points to float there, with 7-bit none (tests/test_export.py)
                quantize_dynamic(src / name, tmp_out, weight_type=QuantType.QInt8, reduce_range=True)
            finally:
                root.setLevel(level)
            _copy_metadata(src / name, tmp_out)
            atomic_write_bytes(dst / name, tmp_out.read_bytes())
    for name in (*COPIED, "tokens.txt"):
        if (src / name).is_file():
            atomic_write_bytes(dst / name, (src / name).read_bytes())
    atomic_write_text(dst / "export.json", json.dumps({**info, "int8": True}, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------
def _export_graphs(model: torch.nn.Module, out_dir: Path, *, chunk_size: int, left_chunks: int,
                   vocab_size: int, optimize: bool = True) -> dict[str, str]:
    from qifusion.export.full import ChunkStep, DecoderScores
    from qifusion.export.wenet_ctc import WenetCtcModule

    files: dict[str, str] = {}
    total = 2 + sum(d is not None for d in (model.decoder, model.r_decoder))
    counter = iter(range(1, total + 1))
    common = {"chunk_size": str(chunk_size), "left_chunks": str(left_chunks), "vocab_size": str(vocab_size)}

    wenet = WenetCtcModule(model, chunk_size=chunk_size, left_chunks=left_chunks).eval()
    _export(wenet, wenet.example_inputs(), out_dir / FILES["wenet_ctc"],
            input_names=["x", "offset", "required_cache_size", "attn_cache", "conv_cache", "attn_mask"],
            output_names=["log_probs", "next_att_cache", "next_conv_cache"], dynamic_shapes=None,
            metadata=wenet.metadata(vocab_size=vocab_size), optimize=optimize,
            label=f"[{next(counter)}/{total}]")
    files["wenet_ctc"] = FILES["wenet_ctc"]

    step = ChunkStep(model, chunk_size=chunk_size, left_chunks=left_chunks).eval()
    B = torch.export.Dim("batch", min=1, max=1024)
    dyn = tuple({1 if n in ("att_cache", "cnn_cache") else 0: B} for n in step.input_names)
    enc = model.encoder
    meta = {**common, "model_type": "qifusion_chunk", "subsampling_rate": str(enc.subsampling_rate),
            "right_context": str(enc.right_context), "num_accents": str(model.num_accents),
            "aid_pooling": model.cfg.accent.aid_pooling}
    _export(step, step.example_inputs(2), out_dir / FILES["chunk"], input_names=step.input_names,
            output_names=step.output_names, dynamic_shapes=(dyn,), metadata=meta, optimize=optimize,
            label=f"[{next(counter)}/{total}]")
    files["chunk"] = FILES["chunk"]

    for key, dec in (("decoder", model.decoder), ("r_decoder", model.r_decoder)):
        if dec is None:
            continue
        scorer = DecoderScores(dec).eval()
        N, T, L = torch.export.Dim("N"), torch.export.Dim("T"), torch.export.Dim("L")
        _export(scorer, scorer.example_inputs(), out_dir / FILES[key], input_names=scorer.input_names,
                output_names=scorer.output_names,
                dynamic_shapes=({0: N, 1: T}, {0: N, 1: T}, {0: N, 1: L}, {0: N}),
                metadata={**common, "model_type": f"qifusion_{key}"}, optimize=optimize,
                label=f"[{next(counter)}/{total}]")
        files[key] = FILES[key]
    return files


def _export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path, *, input_names: list[str],
            output_names: list[str], dynamic_shapes: Any, metadata: dict[str, str],
            optimize: bool = True, label: str = "") -> None:
    """Export ``module(*args)`` with the dynamo exporter, add ``metadata``, write ``path`` atomically."""
    t0 = time.perf_counter()
    _progress(f"{label} {path.name}: tracing and converting ...".strip())
    reg = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = reg.level
    reg.setLevel(logging.ERROR)  # "torchvision is not installed" notices
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            prog = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET, input_names=input_names,
                                     output_names=output_names, dynamic_shapes=dynamic_shapes, verbose=False,
                                     optimize=optimize)
        except Exception as e:  # the exporter's own errors are long; keep the cause
            raise UserError(f"ONNX export of {path.name} failed: {type(e).__name__}: {str(e)[:2000]}") from e
        finally:
            reg.setLevel(level)
    proto = prog.model_proto
    _set_metadata(proto, metadata)
    data = proto.SerializeToString()
    atomic_write_bytes(path, data)
    took = time.perf_counter() - t0
    _progress(f"{label} {path.name} written ({len(data) / 1e6:.1f} MB, {took:.1f} s)".strip())


def _set_metadata(proto: Any, metadata: dict[str, str]) -> None:
    keep = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for k, v in metadata.items():
        p = proto.metadata_props.add()
        p.key, p.value = k, str(v)


def _copy_metadata(src: Path, dst: Path) -> None:
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    proto = onnx.load(str(dst))
    _set_metadata(proto, meta)
    onnx.save(proto, str(dst))


def _write_tokens(tokenizer: Any, path: Path) -> None:
    """sherpa-onnx ``tokens.txt``: one ``unit id`` line per id (id 0 must be <blank>)."""
    lines = []
    for i in range(tokenizer.vocab_size):
        unit = tokenizer.id2token(i)
        if not unit or any(ch.isspace() for ch in unit):
            raise UserError(f"unit {i} ({unit!r}) is empty or has white space; tokens.txt cannot hold it")
        lines.append(f"{unit} {i}\n")
    if tokenizer.id2token(0) != "<blank>":
        raise UserError(f"unit 0 is {tokenizer.id2token(0)!r}, sherpa-onnx wenet_ctc needs <blank>")
    atomic_write_text(path, "".join(lines))


def _copy_model_files(model_dir: Path, out_dir: Path) -> None:
    for name in COPIED:
        if (model_dir / name).is_file():
            tmp = out_dir / f".{name}.copy.tmp"
            shutil.copyfile(model_dir / name, tmp)
            tmp.replace(out_dir / name)
