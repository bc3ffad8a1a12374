"""scripts/bench_equivariant.py's N-body protocol: a training set of S transitions is S / K episodes
of K steps (``--steps-per-episode``), its rows go under their own key, the table states the starts
and the gain, and ``--merge`` joins parts run in parallel without losing rows."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_equivariant.py"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=600, check=True)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Two tiny runs (10 training steps) of two protocols, each into its own result file."""
    work = tmp_path_factory.mktemp("bench_eq")
    a, b = work / "a.json", work / "b.json"
    run("--work", str(work), "--systems", "spring-2d", "--sizes", "50", "--steps", "10", "--steps-per-episode", "2",
        "--out", str(a))
    run("--work", str(work), "--systems", "spring-2d", "--sizes", "50", "--steps", "10", "--out", str(b))
    return work, a, b


def test_a_training_set_is_size_over_k_episodes_of_k_steps(parts):
    work, a, _ = parts
    meta = json.loads((work / "train-spring-2d-50-spe2" / "meta.json").read_text())
    assert (meta["episodes"], meta["steps"]) == (25, 2)
    meta = json.loads((work / "train-spring-2d-50" / "meta.json").read_text())
    assert (meta["episodes"], meta["steps"]) == (2, 25)
    rows = json.loads(a.read_text())["systems_2_steps_per_episode"]["spring-2d"]["50"]
    assert rows["gn"]["steps_per_episode"] == 2 and rows["egnn"]["steps"] == 10
    assert "spring-2d" not in json.loads(a.read_text())["systems"]  # the default protocol's rows stay apart


def test_merge_keeps_every_part_and_tables_the_gain(parts, tmp_path):
    _, a, b = parts
    out = tmp_path / "merged.json"
    run("--work", str(tmp_path), "--merge", str(a), str(b), "--out", str(out))
    merged = json.loads(out.read_text())
    assert set(merged["systems"]["spring-2d"]) == {"50"}
    assert set(merged["systems_2_steps_per_episode"]["spring-2d"]) == {"50"}
    table = out.with_suffix(".md").read_text()
    assert "## Training episodes of 2 steps" in table and "## Training episodes of 25 steps" in table
    row = merged["systems_2_steps_per_episode"]["spring-2d"]["50"]
    gain = 1 - row["egnn"]["error"] / row["gn"]["error"]
    assert f"| spring-2d | 50 | 25 | {row['gn']['error']:.3f} | {row['egnn']['error']:.3f} | {gain:.0%} |" in table
