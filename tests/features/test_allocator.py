"""dynseg tunes DuckDB's allocator on import, before DuckDB loads, and keeps a user's own setting."""

import os
import subprocess
import sys

CODE = "import pipeline.cli, os; print(os.environ.get('DUCKDB_JE_MALLOC_CONF'))"


def _run(env):
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_importing_dynseg_sets_the_decay_before_duckdb_loads():
    env = {k: v for k, v in os.environ.items() if k != "DUCKDB_JE_MALLOC_CONF"}
    assert _run(env) == "dirty_decay_ms:30,muzzy_decay_ms:0"
    check = "import pipeline, sys; print('duckdb' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "False"  # so the setting is in place when DuckDB's allocator starts


def test_a_users_own_setting_is_kept():
    assert _run({**os.environ, "DUCKDB_JE_MALLOC_CONF": "dirty_decay_ms:5000"}) == "dirty_decay_ms:5000"
