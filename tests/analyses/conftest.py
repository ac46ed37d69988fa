import os
import subprocess
import sys
import time

import pandas as pd
import pytest


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """`dissipate figures --preset smoke` run once, as a user runs it (a fresh process, offline, empty caches):
    (output folder, stdout, seconds)."""
    out = tmp_path_factory.mktemp("figures")
    env = {**os.environ, "DISSIPATE_OFFLINE": "1", "DISSIPATE_DATA": str(tmp_path_factory.mktemp("data")),
           "TORCH_HOME": str(tmp_path_factory.mktemp("torch_home"))}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "dissipate", "figures", "--preset", "smoke", "--out", str(out)],
                            capture_output=True, text=True, env=env, timeout=600)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    print(f"dissipate figures --preset smoke: {seconds:.1f} s")
    return out, result.stdout, seconds


@pytest.fixture(scope="session")
def result(smoke):
    """The CSV an analysis wrote in the smoke run, by name."""
    out, _, _ = smoke
    return lambda name: pd.read_csv(out / f"{name}.csv")
