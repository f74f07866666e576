"""qifusion.malloc: which heap allocator ``qifusion train`` re-executes itself under, and when it does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qifusion import malloc

ROOT = Path(__file__).resolve().parents[1]
LIB = "/opt/x/libjemalloc.so.2"


def test_allocator_env_preloads_jemalloc_before_the_users_preload() -> None:
    new = malloc.allocator_env({"LD_PRELOAD": "/a/libfoo.so"}, library=LIB, bf16_autocast=True)
    assert new == {"LD_PRELOAD": f"{LIB} /a/libfoo.so", "MALLOC_CONF": malloc.JEMALLOC_CONF}
    conf = malloc.allocator_env({"MALLOC_CONF": "narenas:1"}, library=LIB, bf16_autocast=True)["MALLOC_CONF"]
    assert conf == "narenas:1"
    assert "decay" not in malloc.JEMALLOC_CONF  # jemalloc's own decay: memory goes back (docs/train.md)


def test_auto_preloads_only_under_a_cpu_bf16_autocast_and_jemalloc_always() -> None:
    """float32 steps gain nothing from jemalloc (docs/train.md "Heap allocator"): ``auto`` keeps the system's
    malloc for them; ``QIFUSION_MALLOC=jemalloc`` preloads it whatever the precision."""
    assert malloc.allocator_env({}, library=LIB, bf16_autocast=False) == {}
    assert malloc.allocator_env({"QIFUSION_MALLOC": "auto"}, library=LIB, bf16_autocast=False) == {}
    forced = malloc.allocator_env({"QIFUSION_MALLOC": "jemalloc"}, library=LIB, bf16_autocast=False)
    assert forced["LD_PRELOAD"] == LIB


@pytest.mark.parametrize("env", [{"QIFUSION_MALLOC": "system"}, {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"},
                                 {"LD_PRELOAD": "/usr/lib/libtcmalloc_minimal.so.4"}])
def test_allocator_env_leaves_the_users_choice(env: dict[str, str]) -> None:
    assert malloc.allocator_env(env, library=LIB, bf16_autocast=True) == {}


def test_allocator_env_without_the_library_or_with_a_bad_choice() -> None:
    assert malloc.allocator_env({}, library=None, bf16_autocast=True) == {}  # auto: the system's, quietly
    with pytest.raises(ValueError, match=r"QIFUSION_MALLOC=jemalloc but libjemalloc\.so\.2 is not installed"):
        malloc.allocator_env({"QIFUSION_MALLOC": "jemalloc"}, library=None, bf16_autocast=True)
    with pytest.raises(ValueError, match="'tcmalloc': expected one of auto, jemalloc, system"):
        malloc.allocator_env({"QIFUSION_MALLOC": "tcmalloc"}, library=LIB, bf16_autocast=True)


def test_cpu_has_bf16_reads_the_cpu_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n\nprocessor\t: 1\n")
    assert not malloc.cpu_has_bf16(info)
    for flag in ("avx512_bf16", "amx_bf16"):
        info.write_text(f"model name\t: X\nflags\t\t: fpu avx2 {flag} avx512f\n")
        assert malloc.cpu_has_bf16(info)
    assert not malloc.cpu_has_bf16(tmp_path / "missing")


def test_find_jemalloc_searches_the_dirs_in_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert malloc.find_jemalloc([str(a), str(b)]) is None
    (b / malloc.LIBRARY).write_bytes(b"")
    assert malloc.find_jemalloc([str(a), str(b)]) == str(b / malloc.LIBRARY)


def test_bad_choice_is_a_clear_error_before_training(tmp_path: Path) -> None:
    env = dict(os.environ, QIFUSION_MALLOC="fast", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "qifusion", "train", "--config", "conf/tiny.yaml", "--data",
                          str(tmp_path / "none"), "--exp", str(tmp_path / "exp")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "train: error: QIFUSION_MALLOC='fast': expected one of auto, jemalloc, system" in res.stderr


@pytest.mark.skipif(malloc.find_jemalloc() is None, reason="libjemalloc2 not installed (CI installs it)")
def test_describe_reads_the_preloaded_library() -> None:
    code = "from qifusion import malloc; print(malloc.describe())"
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    run = {name: subprocess.run([sys.executable, "-c", code], env=dict(base, PYTHONPATH=str(ROOT), **extra),
                                capture_output=True, text=True, check=True).stdout.strip()
           for name, extra in [("jemalloc", malloc.allocator_env({}, library=malloc.find_jemalloc(),
                                                                       bf16_autocast=True)),
                               ("system", {})]}
    assert run == {"jemalloc": f"jemalloc ({malloc.find_jemalloc()})", "system": "system"}


def test_the_reexecuted_start_asks_nothing() -> None:
    """The re-executed process (guard set) neither reads the config nor re-executes again."""
    def ask() -> bool:
        raise AssertionError("asked after the re-execution")
    env = {"QIFUSION_MALLOC_REEXEC": "1", "QIFUSION_MALLOC": "jemalloc"}
    malloc.reexec_with_jemalloc(env, bf16_autocast=ask)
