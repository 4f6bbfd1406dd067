"""Generated documentation is up to date with the catalogue."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_mig_profile_tables_are_current():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "hacking", "gen_mig_tables.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
