"""Which heap allocator a training process runs with: jemalloc under a CPU bf16 autocast, else the
system's malloc (torch-free module).

torch allocates every CPU tensor from the C heap (``c10::alloc_cpu`` -> ``posix_memalign``). A training
hour of the small configs meets ~3000 distinct batch shapes, and a profile of a bf16 training step under
glibc put ~12% of the main thread inside ``posix_memalign``. With jemalloc (size classes, per-thread
caches) preloaded, bf16 steps resumed from one checkpoint ran at 142-155 instead of 120-130 s of audio per
second, with jemalloc's default page decay as without decay (hand-made starts on an AVX512-BF16 CPU); a
bf16 hour under jemalloc held 8847 steps where float32 under glibc held 6158. Float32 steps gain too little
to pay for it: under jemalloc without decay as fast as under glibc (116 against 118-121, hand-made) or 11%
faster (one start each on an AVX2 CPU), but its trainer grew by ~1.2 MB per step without end (8.8 GB after
a bf16 hour); under its default decay, 16-20% slower than glibc (freed pages go back to the system and are
faulted in again). Numbers and commands: docs/train.md "Heap allocator".

``QIFUSION_MALLOC``: ``auto`` (default) preloads jemalloc, with its default decay, when the run will train
under a CPU bf16 autocast (``train.amp: bf16`` on a CPU with AVX512-BF16 or AMX, :func:`cpu_has_bf16`);
``jemalloc`` always; ``system`` never. A library must be loaded before the process starts to replace malloc,
so ``qifusion train`` re-executes itself once with ``LD_PRELOAD`` set (:func:`reexec_with_jemalloc`), as
PyTorch's own CPU launcher (``torch.backends.xeon.run_cpu --enable-jemalloc``) preloads it. A user's own
``LD_PRELOAD`` of jemalloc or tcmalloc, and their ``MALLOC_CONF``, are left as they are.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path

CHOICE = "QIFUSION_MALLOC"
CHOICES = ("auto", "jemalloc", "system")  # auto (default): jemalloc under a CPU bf16 autocast
# jemalloc's own page decay (freed pages go back to the system after ~10 s), with a background thread doing
# the purging: bounded memory, and bf16 steps as fast as with no decay at all (which Intel's PyTorch CPU
# tuning guide sets, "dirty_decay_ms:-1,muzzy_decay_ms:-1": the trainer grew by ~1.2 MB per step)
JEMALLOC_CONF = "background_thread:true,metadata_thp:auto"
NO_DECAY_CONF = f"{JEMALLOC_CONF},dirty_decay_ms:-1,muzzy_decay_ms:-1"  # as bfj-baseline-s3-accents trained
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


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has bf16 matmul instructions (AVX512-BF16 or AMX-BF16 in its ``/proc/cpuinfo`` flags),
    read without torch; False where the file is missing."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    lines = (line for line in text.splitlines() if line.startswith("flags"))
    flags = next((line.split(":", 1)[1].split() for line in lines), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def allocator_env(env: Mapping[str, str], *, library: str | None, bf16_autocast: bool) -> dict[str, str]:
    """The variables to add to ``env`` so that a new process runs with jemalloc ``library``: ``LD_PRELOAD``
    (prepended to the user's) and ``MALLOC_CONF`` (:data:`JEMALLOC_CONF` unless the user set it). Empty
    when ``QIFUSION_MALLOC=system``, or ``auto`` (the default) and not ``bf16_autocast`` (the run will not
    train under a CPU bf16 autocast), when ``LD_PRELOAD`` already names jemalloc or tcmalloc, off Linux, or
    when ``library`` is None. ValueError for a ``QIFUSION_MALLOC`` other than :data:`CHOICES`, and for
    ``QIFUSION_MALLOC=jemalloc`` without the library."""
    choice = env.get(CHOICE, "auto")
    if choice not in CHOICES:
        raise ValueError(f"{CHOICE}={choice!r}: expected one of {', '.join(CHOICES)}")
    preload = env.get("LD_PRELOAD", "")
    if (choice == "system" or (choice == "auto" and not bf16_autocast) or not sys.platform.startswith("linux")
            or any(name in preload for name in _PRELOADED)):
        return {}
    if library is None:
        if choice == "jemalloc":
            raise ValueError(f"{CHOICE}=jemalloc but {LIBRARY} is not installed (apt install libjemalloc2)")
        return {}
    return {"LD_PRELOAD": f"{library} {preload}".strip(),
            "MALLOC_CONF": env.get("MALLOC_CONF", JEMALLOC_CONF)}


def reexec_with_jemalloc(env: MutableMapping[str, str] = os.environ, *,
                         bf16_autocast: Callable[[], bool]) -> None:
    """Replace this process by the same command line under jemalloc (:func:`allocator_env`), once; return
    when there is nothing to change. ``bf16_autocast`` says whether the run will train under a CPU bf16
    autocast; it is asked only before the re-execution, not in the re-executed process. Call before torch
    loads: the command is started again from scratch."""
    if env.get("QIFUSION_MALLOC_REEXEC"):  # the guard: never loop if the preload did not take
        return
    new = allocator_env(env, library=find_jemalloc(), bf16_autocast=bf16_autocast())
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
