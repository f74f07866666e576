"""Shared pytest fixtures. OMP_WAIT_POLICY must be set before torch loads (see DEVELOPERS)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
