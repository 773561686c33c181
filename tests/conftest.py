"""Shared fixtures: a throw-away project folder with the repo's configs and its own workspace."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]

# pytest-xdist starts its workers with COLUMNS=80 and LINES=24 in their environment, which the CLI
# would take for a terminal's size; the tests read the CLI's output as a scheduler or a log gets it
# (piped, no COLUMNS: see pipeline/cli/common.py), with or without workers.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for var in ("COLUMNS", "LINES"):
        os.environ.pop(var, None)


class Project:
    """A project folder in tmp: configs copied from the repo, data written by the test."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        shutil.copytree(REPO / "configs", root / "configs", ignore=shutil.ignore_patterns("local"))

    @property
    def workspace(self) -> Path:
        return self.root / ".dynseg"

    def catalog(self, **sources: dict) -> None:
        """Replace the catalog with the given sources (name -> spec dict)."""
        import yaml

        (self.root / "configs" / "catalog.yaml").write_text(yaml.safe_dump({"sources": sources}))

    def write_events(self, df: pd.DataFrame, name: str = "events.parquet", **spec) -> Path:
        path = self.data / name
        if name.endswith(".csv"):
            df.to_csv(path, index=False)
            self.catalog(events={"format": "csv", "path": f"data/{name}", **spec})
        else:
            df.to_parquet(path, index=False)
            self.catalog(events={"format": "parquet", "path": f"data/{name}", **spec})
        return path


def execute_notebook(name: str, folder: Path) -> list:
    """Run ``notebooks/<name>`` in a Jupyter kernel whose working folder is ``folder``; its code
    cells' outputs, after checking that none is an error and that nothing went to stderr (tqdm's
    "IProgress not found" and MLflow's download bars once did)."""
    import warnings

    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the kernel's own start-up warnings
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"], name
    assert not [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"], name
    return outputs


@contextlib.contextmanager
def generated_shop(folder: Path, customers: int, seed: int, end: str = "2026-11-27") -> Iterator[Project]:
    """A project with a generated shop in its workspace, the environment pointing at it, for
    module-scoped fixtures (``folder`` from ``tmp_path_factory.mktemp``)."""
    from pipeline.synthetic import generate, write

    with pytest.MonkeyPatch.context() as mp:
        p = Project(folder / "proj")
        for var in ("DYNSEG_WORKSPACE", "DYNSEG_PROFILE", "MLFLOW_TRACKING_URI"):
            mp.delenv(var, raising=False)
        mp.setenv("DYNSEG_PROJECT", str(p.root))
        write(generate(customers, seed=seed, end=end), p.workspace / "data")
        yield p


def trained_champions(p: Project, snapshots: int = 4, bootstrap_samples: int = 20, as_of=None):
    """Both models trained on ``p``'s shop (fewer snapshots and resamples: the same code path,
    faster) and promoted to champion, whatever the gate says; returns the loaded config."""
    from models import registry
    from pipeline.config import load_config
    from pipeline.jobs.train import train_job
    from pipeline.workspace import Workspace

    training = p.root / "configs" / "training.yaml"
    training.write_text(training.read_text().replace("snapshots: 6", f"snapshots: {snapshots}")
                        .replace("bootstrap_samples: 200", f"bootstrap_samples: {bootstrap_samples}"))
    cfg = load_config(p.root)
    registry.connect(Workspace(cfg.workspace).tracking_uri())
    for target in ("purchase", "churn"):
        result = train_job(cfg, target, as_of=as_of, allow_unvalidated=True)
        registry.promote(result.model_name, result.version, force=True, reason="test fixture")
    return cfg


@pytest.fixture
def project(tmp_path, monkeypatch) -> Project:
    p = Project(tmp_path / "proj")
    monkeypatch.setenv("DYNSEG_PROJECT", str(p.root))
    monkeypatch.delenv("DYNSEG_WORKSPACE", raising=False)
    monkeypatch.delenv("DYNSEG_PROFILE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return p


def good_events(n_customers: int = 3) -> pd.DataFrame:
    rows = []
    for i in range(n_customers):
        c = f"c{i}"
        rows += [
            (f"{c}-1", c, "signed_up", "2026-01-01 10:00:00", None),
            (f"{c}-2", c, "email_sent", "2026-01-02 09:00:00", None),
            (f"{c}-3", c, "order_completed", "2026-01-05 12:00:00", 40.0 + i),
        ]
    df = pd.DataFrame(rows, columns=["event_id", "customer_id", "event_type", "ts", "amount"])
    df["ts"] = pd.to_datetime(df["ts"])
    return df


def dead_pid() -> int:
    """The pid of a process that has ended."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


# -- the benchmark scripts (tests/bench): each runs as a user runs it, a fresh Python process from
# the repository (bench/ is no package, and its features.py would shadow the `features` package).
# A change to a function they call (``fit_and_evaluate`` returning a fourth value) broke three of
# them for a day without a test noticing. Their figures are not asserted, only their shape.
@pytest.fixture
def bench(tmp_path):
    """Run ``bench/SCRIPT`` with arguments from a temp folder; the completed process."""
    def run(script: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
    return run
