"""Which heap allocator a training process runs with: jemalloc where the system has it (torch-free module).

torch allocates every CPU tensor from the C heap (``c10::alloc_cpu`` -> ``posix_memalign``). A training
hour of the small configs meets ~3000 distinct batch shapes, so glibc's heap fills with free chunks of
every size, and a profile of a bf16 training step put ~12% of the main thread inside ``posix_memalign``.
With jemalloc (size classes, per-thread caches) preloaded, training steps resumed from one checkpoint ran
at 151 instead of ~125 s of audio per second under a bf16 autocast (hand-made starts; the committed
benchmark, on a slower half hour of the host, was noisier); float32 steps were unchanged with
``dirty_decay_ms:-1`` and 16% slower with jemalloc's default decay, which returns freed pages to the system
and faults them in again. A bf16 hour under jemalloc held 8847 steps where float32 under glibc held 6158,
and its trainer grew to 8.8 GB. Numbers and commands: docs/train.md "Heap allocator".

A library must be loaded before the process starts to replace malloc, so ``qifusion train`` re-executes
itself once with ``LD_PRELOAD`` set (:func:`reexec_with_jemalloc`), as PyTorch's own CPU launcher
(``torch.backends.xeon.run_cpu --enable-jemalloc``) preloads it. ``QIFUSION_MALLOC=system`` keeps the
system allocator; a user's own ``LD_PRELOAD`` of jemalloc or tcmalloc is left as it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

CHOICE = "QIFUSION_MALLOC"  # "jemalloc" (default: when found) or "system"
CHOICES = ("jemalloc", "system")
# never hand freed pages back to the system (they would be faulted in again on the next step), as Intel's
# PyTorch CPU tuning guide sets it; the cost is memory (a bf16 hour of the small configs grew to 8.8 GB)
JEMALLOC_CONF = "background_thread:true,metadata_thp:auto,dirty_decay_ms:-1,muzzy_decay_ms:-1"
LIBRARY = "libjemalloc.so.2"
# Debian/Ubuntu (apt install libjemalloc2), Fedora/RHEL (jemalloc), conda and virtualenv prefixes
SEARCH_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
               "/usr/local/lib", f"{sys.prefix}/lib")
_PRELOADED = ("jemalloc", "tcmalloc")  # a user's own choice of allocator, left as it is


def find_jemalloc(dirs: Sequence[str] = SEARCH_DIRS) -> str | None:
    """The path of the first ``libjemalloc.so.2`` in ``dirs``, or None."""
    for d in dirs:
        path = Path(d) / LIBRARY
        if path.is_file():
            return str(path)
    return None


def allocator_env(env: Mapping[str, str], *, library: str | None) -> dict[str, str]:
    """The variables to add to ``env`` so that a new process runs with jemalloc ``library``: ``LD_PRELOAD``
    (prepended to the user's) and ``MALLOC_CONF`` (:data:`JEMALLOC_CONF` unless the user set it). Empty
    when ``QIFUSION_MALLOC=system``, when ``LD_PRELOAD`` already names jemalloc or tcmalloc, off Linux, or
    when ``library`` is None. ValueError for a ``QIFUSION_MALLOC`` other than :data:`CHOICES`."""
    choice = env.get(CHOICE, "jemalloc")
    if choice not in CHOICES:
        raise ValueError(f"{CHOICE}={choice!r}: expected one of {', '.join(CHOICES)}")
    preload = env.get("LD_PRELOAD", "")
    if (choice == "system" or library is None or not sys.platform.startswith("linux")
            or any(name in preload for name in _PRELOADED)):
        return {}
    return {"LD_PRELOAD": f"{library} {preload}".strip(),
            "MALLOC_CONF": env.get("MALLOC_CONF", JEMALLOC_CONF)}


def reexec_with_jemalloc(env: MutableMapping[str, str] = os.environ) -> None:
    """Replace this process by the same command line under jemalloc (:func:`allocator_env`), once; return
    when there is nothing to change. Call before torch loads: the command is started again from scratch."""
    if env.get("QIFUSION_MALLOC_REEXEC"):  # the guard: never loop if the preload did not take
        return
    new = allocator_env(env, library=find_jemalloc())
    if not new:
        return
    env.update(new, QIFUSION_MALLOC_REEXEC="1")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], dict(env))


def describe() -> str:
    """The allocator this process runs with, as ``train.log`` records it: ``jemalloc (PATH)``, ``tcmalloc
    (PATH)`` or ``system``, read from the libraries mapped into the process."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    for line in maps.splitlines():
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        for name in _PRELOADED:
            if f"lib{name}" in Path(path).name:
                return f"{name} ({path})"
    return "system"
