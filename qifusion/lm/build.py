"""``qifusion lm``: build a word n-gram LM (KenLM ``lmplz`` + ``build_binary``) and a lexicon for a model.

Text sources: plain text files (one sentence per line) or Kaldi data dirs (their ``text``, ids dropped),
plus optionally ``--english``: the general-English sentence pool of the Debian packages the synthetic
corpus reads (:func:`qifusion.data.synth_text.sentence_pool`). Sentences are normalised like transcripts.

Leakage check: no LM sentence may equal a sentence of an ``--exclude`` data dir (the dev/test splits the
LM will be evaluated on). A given text file that contains one is an error naming the file and the count;
``--english`` pool sentences that equal one are dropped (and counted in ``lm.json``).

The lexicon holds every word of the LM text whose characters are all units of the model (others are
counted and left out). KenLM's tools are found next to the Python executable (``make setup`` builds
them into ``.venv/bin``) or on ``PATH``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qifusion.data.tokenizer import SPACE, Tokenizer, normalize_text
from qifusion.errors import UserError
from qifusion.fileio import atomic_write_text
from qifusion.lm.files import LEXICON_FILE, LM_DIR, LM_FILE, META_FILE, spell


def find_tool(name: str) -> str:
    """Path of a KenLM tool (``lmplz``/``build_binary``): beside ``sys.executable``, then ``PATH``."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise UserError(f"KenLM's '{name}' not found beside {sys.executable} or on PATH: run 'make setup' "
                        "(it builds lmplz and build_binary from the kenlm source package)")
    return found


def read_sentences(source: Path) -> list[str]:
    """Normalised sentences of a text file, or of a Kaldi data dir's ``text`` (utterance ids dropped)."""
    if source.is_dir():
        path = source / "text"
        if not path.is_file():
            raise UserError(f"{source} is a directory without a 'text' file (expected a Kaldi data dir)")
        lines = [ln.split(maxsplit=1)[1] if len(ln.split(maxsplit=1)) == 2 else ""
                 for ln in path.read_text(encoding="utf-8").splitlines()]
    elif source.is_file():
        lines = source.read_text(encoding="utf-8", errors="strict").splitlines()
    else:
        raise UserError(f"text source {source} not found")
    return [s for s in (normalize_text(ln) for ln in lines) if s]


def build_lm(
    *,
    model_dir: Path,
    texts: Iterable[Path],
    out_dir: Path | None = None,
    exclude: Iterable[Path] = (),
    english: bool = False,
    order: int = 4,
    prune: list[int] | None = None,
    memory: str = "500M",
) -> dict[str, Any]:
    """Build ``lm.bin``, ``lexicon.txt`` and ``lm.json`` in ``out_dir`` (default ``model_dir/lm``).

    ``prune``: lmplz ``--prune`` thresholds per order (e.g. ``[0, 0, 1]``); ``memory``: lmplz ``-S``.
    Returns the metadata written to ``lm.json``.
    """
    if not 2 <= order <= 6:
        raise UserError(f"--order must be 2..6 (KenLM is built with max order 6), got {order}")
    tok = Tokenizer.load(model_dir)
    units = {tok.id2token(i) for i in range(tok.vocab_size)} - {SPACE}
    banned: dict[str, str] = {}
    for d in exclude:
        for s in read_sentences(Path(d)):
            banned.setdefault(s, str(d))
    sentences: list[str] = []
    sources: list[dict[str, Any]] = []
    for t in texts:
        got = read_sentences(Path(t))
        leaked = [s for s in got if s in banned]
        if leaked:
            raise UserError(f"{t}: {len(leaked)} of its sentences are sentences of the excluded split(s) "
                            f"({banned[leaked[0]]}, e.g. {leaked[0]!r}); an LM must not contain them")
        sentences += got
        sources.append({"path": str(t), "sentences": len(got)})
    if english:
        from qifusion.data.synth_text import sentence_pool

        pool = sentence_pool(min_words=1, max_words=1000)
        kept = [s for s in pool if s not in banned]
        sentences += kept
        sources.append({"path": "english (wordnet + fortunes)", "sentences": len(kept),
                        "dropped_excluded": len(pool) - len(kept)})
    if not sentences:
        raise UserError("no LM text: give --text files/dirs or --english")
    out = Path(out_dir) if out_dir is not None else Path(model_dir) / LM_DIR
    out.mkdir(parents=True, exist_ok=True)
    words: dict[str, int] = {}
    for s in sentences:
        for w in s.split(" "):
            words[w] = words.get(w, 0) + 1
    lexicon = {w: sp for w in sorted(words) if (sp := spell(w, units)) is not None}
    if not lexicon:
        raise UserError(f"no word of the LM text can be spelled with the units of {model_dir}")
    _run_kenlm(sentences, out / LM_FILE, order=order, prune=prune, memory=memory)
    atomic_write_text(out / LEXICON_FILE, "".join(f"{w} {' '.join(sp)}\n" for w, sp in lexicon.items()))
    meta = {
        "order": order, "prune": prune or [], "sentences": len(sentences), "words": len(words),
        "lexicon_words": len(lexicon), "oov_spelling": len(words) - len(lexicon), "sources": sources,
        "excluded": [str(d) for d in exclude], "excluded_sentences": len(banned),
        "units_sha1": hashlib.sha1("\n".join(sorted(units)).encode()).hexdigest(),
    }
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=1) + "\n")
    print(f"lm: {len(sentences)} sentences, {len(lexicon)} lexicon words, order {order} -> {out}",
          file=sys.stderr)
    return meta


def _run_kenlm(sentences: list[str], dest: Path, *, order: int, prune: list[int] | None, memory: str) -> None:
    lmplz, build_binary = find_tool("lmplz"), find_tool("build_binary")
    with tempfile.TemporaryDirectory(prefix=".lm-build-", dir=dest.parent) as tmp:
        arpa = Path(tmp) / "lm.arpa"
        cmd = [lmplz, "-o", str(order), "-S", memory, "-T", tmp, "--discount_fallback", "--arpa", str(arpa)]
        if prune:
            cmd += ["--prune", *map(str, prune)]
        _run(cmd, stdin="\n".join(sentences) + "\n")
        part = Path(tmp) / "lm.bin"
        _run([build_binary, "-S", memory, "-T", tmp, str(arpa), str(part)], stdin=None)
        os.replace(part, dest)  # same directory tree: an atomic rename


def _run(cmd: list[str], *, stdin: str | None) -> None:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise UserError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}):\n{tail}")
