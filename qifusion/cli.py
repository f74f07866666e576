"""Command-line interface: the only place that parses arguments.

One small ``cmd_*`` function per subcommand; each imports its implementation lazily (so ``qifusion
--help`` is fast) and calls it with keyword arguments. Errors a user can fix (bad input, bad config)
are raised as :class:`qifusion.errors.UserError` and printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from qifusion import malloc, omp
from qifusion.decode.options import (  # torch-free: fast --help
    DEFAULT_BEAM,
    DEFAULT_CHUNK,
    DEFAULT_MODE,
    MODES,
)
from qifusion.errors import UserError


# --------------------------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------------------------
def cmd_synth(args: argparse.Namespace) -> int:
    from qifusion.data.synth import synthesize_corpus

    accents = args.accents.split(",") if args.accents else None
    summary = synthesize_corpus(
        out_dir=Path(args.out),
        preset=args.preset,
        utts_per_accent=args.utts_per_accent,
        seed=args.seed,
        jobs=args.jobs,
        accents=accents,
    )
    return 0 if summary.ok else 1


def cmd_voices(args: argparse.Namespace) -> int:
    from qifusion.data.voices_nonfree import install_nonfree

    return install_nonfree(yes=args.yes, dry_run=args.dry_run)


def cmd_prepare(args: argparse.Namespace) -> int:
    from qifusion.data.prepare import prepare_corpus

    prepare_corpus(corpus=args.corpus, src=Path(args.src), out_dir=Path(args.out), shards=args.shards)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from qifusion.train.run import train

    train(
        config_path=Path(args.config),
        data_dir=Path(args.data),
        exp_dir=Path(args.exp),
        resume=args.resume,
        device=args.device,
        overrides=args.set or [],
        init=Path(args.init) if args.init else None,
    )
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from qifusion.train.average import average_checkpoints

    average_checkpoints(
        exp_dir=Path(args.exp),
        num=args.num,
        by=args.by,
        out_dir=Path(args.out) if args.out else None,
        fp16=args.fp16,
    )
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from qifusion.decode.run import decode_dir

    decode_dir(
        model_dir=Path(args.model),
        data_dir=Path(args.data),
        out_dir=Path(args.out),
        mode=args.mode,
        chunk_size=args.chunk_size,
        left_chunks=args.left_chunks,
        beam_size=args.beam_size,
        batch_size=args.batch_size,
        backend=args.backend,
        **_lm_kwargs(args),
    )
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    from qifusion.decode.transcribe import transcribe_files

    n_failed = transcribe_files(
        model_dir=Path(args.model),
        files=[Path(f) for f in args.files],
        mode=args.mode,
        chunk_size=args.chunk_size,
        left_chunks=args.left_chunks,
        streaming=args.streaming,
        backend=args.backend,
        out=sys.stdout,
        decode_options=_lm_kwargs(args),
    )
    return 1 if n_failed else 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from qifusion.decode.calibrate import calibrate_model

    calibrate_model(Path(args.model), Path(args.data), chunk_size=args.chunk_size, batch_size=args.batch_size)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from qifusion.export.onnx_export import export_model

    export_model(model_dir=Path(args.model), out_dir=Path(args.out) if args.out else None, int8=args.int8,
                 chunk_size=args.chunk_size, left_chunks=args.left_chunks)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from qifusion.serve.server import serve

    serve(
        model_dir=Path(args.model),
        host=args.host,
        port=args.port,
        backend=args.backend,
        chunk_size=args.chunk_size,
        max_sessions=args.max_sessions,
        token=args.token,
        max_message_bytes=args.max_message_bytes,
        max_utterance_s=args.max_utterance_s,
        idle_timeout_s=args.idle_timeout_s,
        mode=args.mode,
        **_lm_kwargs(args),
    )
    return 0


def cmd_lm(args: argparse.Namespace) -> int:
    from qifusion.lm.build import build_lm

    build_lm(model_dir=Path(args.model), texts=[Path(t) for t in args.text or []],
             out_dir=Path(args.out) if args.out else None, exclude=[Path(d) for d in args.exclude or []],
             english=args.english, order=args.order, prune=args.prune, memory=args.memory)
    return 0


def _lm_kwargs(args: argparse.Namespace) -> dict:
    """LM-mode options of decode/transcribe/serve (see _add_lm_args) as keyword arguments."""
    from qifusion.decode.options import LmOptions
    from qifusion.lm.files import read_hotwords

    given = {k: getattr(args, k) for k in ("lm_weight", "word_score", "beam_size_token", "beam_threshold")
             if getattr(args, k) is not None}
    if args.lm_beam_size is not None:
        given["beam_size"] = args.lm_beam_size
    return {"lm": Path(args.lm) if args.lm else None, "lm_options": LmOptions(**given),
            "hotwords": tuple(read_hotwords(args.hotwords)) if args.hotwords else None}


# --------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from qifusion import __version__

    parser = argparse.ArgumentParser(
        prog="qifusion", description="Accent-aware streaming speech recognition (Qifusion-Net)."
    )
    parser.add_argument("--version", action="version", version=f"qifusion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="synthesise the embedded multi-accent English corpus")
    p.add_argument("--out", required=True, help="output dir (gets train/ dev/ test/)")
    p.add_argument("--preset", default="demo",
                   choices=["demo", "benchmark", "l2", "heldout", "accents", "accents-free"])
    p.add_argument("--utts-per-accent", type=int, default=None, help="total over the three splits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=None, help="parallel workers (default: all cores)")
    p.add_argument("--accents", default=None, help="comma-separated subset of the preset's accents")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("voices", help="install the non-free MBROLA voices of the 'accents' corpus")
    p.add_argument("action", choices=["install-nonfree"])
    p.add_argument("--yes", action="store_true", help="do not ask before changing the system")
    p.add_argument("--dry-run", action="store_true", help="only print what would change")
    p.set_defaults(func=cmd_voices)

    p = sub.add_parser("prepare", help="prepare a corpus layout into qifusion data dirs")
    p.add_argument("corpus", choices=["kespeech", "magicdata-ramc"])
    p.add_argument("src", help="corpus root")
    p.add_argument("--out", required=True)
    p.add_argument("--shards", type=int, default=0, help="also write N tar shards per split")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train a model (also under torchrun for DDP)")
    p.add_argument("--config", required=True)
    p.add_argument("--data", required=True, help="dir holding train/ and dev/")
    p.add_argument("--exp", required=True, help="experiment dir")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override")
    p.add_argument("--init", default=None, help="checkpoint or model dir to fine-tune from")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("average", help="average checkpoints into a model dir")
    p.add_argument("--exp", required=True)
    p.add_argument("--num", type=int, default=5)
    p.add_argument("--by", default="dev_loss", choices=["dev_loss", "last"])
    p.add_argument("--out", default=None)
    p.add_argument("--fp16", action="store_true", help="store the averaged weights as float16")
    p.set_defaults(func=cmd_average)

    p = sub.add_parser("decode", help="decode a data dir and write per-accent reports")
    _add_model_args(p)
    p.add_argument("--data", required=True, help="Kaldi-style dir with wav.scp and text")
    p.add_argument("--out", required=True)
    p.add_argument("--mode", default=DEFAULT_MODE, choices=MODES)
    p.add_argument("--beam-size", type=int, default=DEFAULT_BEAM)
    p.add_argument("--batch-size", type=int, default=16)
    _add_lm_args(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("calibrate", help="measure AID accuracy on dev, write MODEL/aid_calibration.json")
    p.add_argument("--model", required=True, help="model dir (the calibration file is written into it)")
    p.add_argument("--data", required=True, help="dev data dir with accent labels (utt2accent)")
    p.add_argument("--chunk-size", type=int, default=-1, help="-1 = full context")
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("transcribe", help="transcribe audio files (one JSON line per file)")
    _add_model_args(p)
    p.add_argument("--mode", default=DEFAULT_MODE, choices=MODES)
    p.add_argument("--streaming", action="store_true", help="feed 100 ms pieces to the stream API")
    _add_lm_args(p)
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("export", help="export ONNX models (sherpa-onnx wenet_ctc + full model)")
    p.add_argument("--model", required=True)
    p.add_argument("--out", default=None, help="export dir (default MODEL/onnx, where --backend onnx looks)")
    p.add_argument("--int8", action="store_true", help="also write dynamically quantised models (OUT/int8)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK,
                   help="output frames per chunk (sherpa default)")
    p.add_argument("--left-chunks", type=int, default=4, help="history chunks (sherpa-onnx default 4)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="WebSocket streaming server (WeNet protocol) + web page")
    p.add_argument("--model", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=10086)
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    p.add_argument("--max-sessions", type=int, default=32)
    p.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN'")
    p.add_argument("--max-message-bytes", type=int, default=1 << 20, help="largest client frame")
    p.add_argument("--max-utterance-s", type=float, default=300.0, help="audio per utterance (seconds)")
    p.add_argument("--idle-timeout-s", type=float, default=30.0, help="close sessions silent this long")
    p.add_argument("--mode", default=DEFAULT_MODE, choices=MODES, help="final-result mode")
    _add_lm_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("lm", help="build a word n-gram LM (KenLM) and lexicon for a model (docs/lm.md)")
    p.add_argument("--model", required=True, help="model dir (its units.txt spells the lexicon)")
    p.add_argument("--text", nargs="+", help="text files (a sentence per line) or Kaldi data dirs")
    p.add_argument("--english", action="store_true", help="add the general-English sentences of the "
                   "Debian wordnet/fortunes packages")
    p.add_argument("--exclude", nargs="+", help="data dirs (dev/test) whose sentences must not be in the LM")
    p.add_argument("--out", default=None, help="LM dir (default MODEL/lm)")
    p.add_argument("--order", type=int, default=4)
    p.add_argument("--prune", type=int, nargs="+", default=None, help="lmplz --prune counts per order")
    p.add_argument("--memory", default="500M", help="lmplz/build_binary memory (-S)")
    p.set_defaults(func=cmd_lm)
    return parser


def _add_lm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LM modes (lm_beam, lm_rescoring; docs/lm.md)")
    g.add_argument("--lm", default=None, help="LM dir (default MODEL/lm)")
    g.add_argument("--lm-weight", type=float, default=None, help="LM weight (default: tuned on dev)")
    g.add_argument("--word-score", type=float, default=None, help="score added per word")
    g.add_argument("--lm-beam-size", type=int, default=None, help="hypotheses kept by the LM beam search")
    g.add_argument("--beam-size-token", type=int, default=None, help="units tried per frame")
    g.add_argument("--beam-threshold", type=float, default=None, help="prune hypotheses this far below best")
    g.add_argument("--hotwords", default=None, help="file: a word or phrase [boost] per line")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model dir (model.pt, config.yaml, units.txt, ...)")
    p.add_argument("--chunk-size", type=int, default=-1, help="-1 = full context")
    p.add_argument("--left-chunks", type=int, default=-1, help="-1 = all")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"])


def _heap_allocator(args: argparse.Namespace) -> None:
    """Re-execute ``qifusion train`` under jemalloc when it will train under a CPU bf16 autocast (the
    config's ``train.amp`` on a CPU with bf16 matmuls) or ``QIFUSION_MALLOC=jemalloc`` (qifusion/malloc.py).
    A config that does not load is left to the command to report."""
    from qifusion.config import load_config  # torch-free

    def bf16_autocast() -> bool:
        try:
            amp = load_config(args.config, args.set or []).train.amp
        except UserError:  # a bad config: the train command reports it
            return False
        return args.device == "cpu" and amp == "bf16" and malloc.cpu_has_bf16()
    try:
        malloc.reexec_with_jemalloc(bf16_autocast=bf16_autocast)
    except ValueError as e:  # a QIFUSION_MALLOC that is not a choice, or jemalloc asked for and missing
        raise UserError(str(e)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qifusion`` console script."""
    omp.apply_defaults(os.environ)  # before any command imports torch (qifusion/omp.py)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train" and argv is None and "torch" not in sys.modules:
            _heap_allocator(args)  # may start this command again under jemalloc (qifusion/malloc.py)
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"qifusion {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qifusion {args.command}: interrupted", file=sys.stderr)
        return 130
