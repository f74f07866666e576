"""qifusion.omp: how torch's OpenMP threads wait, set by the command line before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys

from qifusion import omp


def test_waits_are_set_only_where_the_user_set_neither() -> None:
    env: dict[str, str] = {"PATH": "/bin"}
    assert omp.apply_defaults(env) == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": str(omp.SPIN_COUNT)}
    assert env == {"PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": str(omp.SPIN_COUNT)}
    for mine in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "0"}, {"OMP_WAIT_POLICY": "PASSIVE"}):
        env = dict(mine)
        assert omp.apply_defaults(env) == {} and env == mine  # the user's choice stands


def test_the_command_line_sets_them_before_torch_is_imported() -> None:
    code = ("import os, sys\nfrom qifusion import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n"
            "    pass\nprint(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'),\n"
            "      'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-3:] == ["PASSIVE", str(omp.SPIN_COUNT), "False"]
    env["GOMP_SPINCOUNT"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-3:] == ["None", "0", "False"]
