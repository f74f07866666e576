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
    new = malloc.allocator_env({"LD_PRELOAD": "/a/libfoo.so"}, library=LIB)
    assert new == {"LD_PRELOAD": f"{LIB} /a/libfoo.so", "MALLOC_CONF": malloc.JEMALLOC_CONF}
    assert malloc.allocator_env({"MALLOC_CONF": "narenas:1"}, library=LIB)["MALLOC_CONF"] == "narenas:1"


@pytest.mark.parametrize("env", [{"QIFUSION_MALLOC": "system"}, {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"},
                                 {"LD_PRELOAD": "/usr/lib/libtcmalloc_minimal.so.4"}])
def test_allocator_env_leaves_the_users_choice(env: dict[str, str]) -> None:
    assert malloc.allocator_env(env, library=LIB) == {}


def test_allocator_env_without_the_library_or_with_a_bad_choice() -> None:
    assert malloc.allocator_env({}, library=None) == {}
    with pytest.raises(ValueError, match="QIFUSION_MALLOC='tcmalloc': expected one of jemalloc, system"):
        malloc.allocator_env({"QIFUSION_MALLOC": "tcmalloc"}, library=LIB)


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
    assert "qifusion train: error: QIFUSION_MALLOC='fast': expected one of jemalloc, system" in res.stderr


@pytest.mark.skipif(malloc.find_jemalloc() is None, reason="libjemalloc2 not installed (CI installs it)")
def test_describe_reads_the_preloaded_library() -> None:
    code = "from qifusion import malloc; print(malloc.describe())"
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    run = {name: subprocess.run([sys.executable, "-c", code], env=dict(base, PYTHONPATH=str(ROOT), **extra),
                                capture_output=True, text=True, check=True).stdout.strip()
           for name, extra in [("jemalloc", malloc.allocator_env({}, library=malloc.find_jemalloc())),
                               ("system", {})]}
    assert run == {"jemalloc": f"jemalloc ({malloc.find_jemalloc()})", "system": "system"}
