"""scripts/bench_cgns.py's measurements on known inputs (the modules of ``scripts/cgns_bench``): the
iteration sweep's noise test, the constraint weights, and the penetration metrics (frozen balls must
not pass as held back); and the benchmark's shape: its command line loads, its modules import the
library only through public names, never the command line, and not one another in a cycle."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gndesign.cgns import ParticleCGNS
from gndesign.config import ParticleModelConfig, SolverConfig
from gndesign.specs import parse_constraints

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SCRIPT = SCRIPTS / "bench_cgns.py"
PACKAGE = SCRIPTS / "cgns_bench"
R = 0.05
SCENE = {"particle_radius": R, "obstacle_radius": 0.04, "x_min": -3.0, "x_max": 3.0, "floor": 0.0, "dt": 0.01,
         "gravity": [0.0, -9.81]}


@pytest.fixture(scope="module")
def bench():
    """The benchmark's modules, imported as the command line imports them (``scripts/`` on the path)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        mods = {n: importlib.import_module(f"cgns_bench.{n}") for n in ("measures", "particles", "report")}
    finally:
        sys.path.remove(str(SCRIPTS))
    return mods


def test_sweep_flags_an_increase_beyond_noise_and_accepts_improvements(bench):
    rng = np.random.default_rng(0)
    base = rng.uniform(1.0, 2.0, 20)
    better = {1: base, 5: 0.5 * base, 20: 0.5 * base + rng.normal(0, 1e-4, 20)}  # 5 -> 20: noise only
    s = bench["measures"].sweep_summary(better)
    assert s["all_within_noise"]
    assert s["max_increase"]["from"] == 5 and s["max_increase"]["to"] == 20
    worse = bench["measures"].sweep_summary({1: base, 5: 0.5 * base, 20: 0.8 * base})
    assert not worse["all_within_noise"]
    w = worse["worst_vs_noise"]
    assert (w["from"], w["to"]) == (5, 20) and w["increase"] == pytest.approx(0.3 * base.mean())
    assert w["relative"] == pytest.approx(0.6)


def test_weighted_specs_append_weights_unless_the_spec_names_one(bench):
    assert bench["measures"].weighted_specs("disk center=0,1 radius=0.3", [1, 100]) == [
        (1.0, "disk center=0,1 radius=0.3 weight=1"), (100.0, "disk center=0,1 radius=0.3 weight=100")]
    assert bench["measures"].weighted_specs("disk center=0,1 radius=0.3 weight=5", [1, 100]) == [
        (5.0, "disk center=0,1 radius=0.3 weight=5")]


def test_penetration_metrics_of_balls_falling_through_a_disk_and_of_frozen_balls(bench):
    cfg = ParticleModelConfig(latent_size=8, mlp_hidden_size=8, message_passing_steps=1, history=2,
                              obstacle_points=2)
    model = ParticleCGNS(cfg, SCENE, SolverConfig(iterations=2))
    disk = parse_constraints(["disk center=0.0,1.0 radius=0.3"])
    # Ball 0 falls straight through the disk's centre, ball 1 falls far from it: 21 frames from z=2 to 0.
    z = torch.linspace(2.0, 0.0, 21)
    traj = torch.zeros(1, 21, 2, 2)
    traj[0, :, 0, 1] = z
    traj[0, :, 1, 0], traj[0, :, 1, 1] = 2.0, z
    through = bench["particles"].penetration(model, disk, traj, R)
    # Deepest at the centre: the ball's surface 0.3 + 0.05 inside.
    assert through["max_radii"] == pytest.approx((0.3 + R) / R, rel=1e-5)
    assert through["entering"] == 0.5 and through["touching"] == 0.5
    assert through["mean_drop_m"] == pytest.approx(2.0)
    assert through["mean_radii"] > 0 and through["mean_inside_radii"] > through["mean_radii"]
    # Balls frozen where they start: no penetration, but they never reach the obstacle.
    frozen = traj[:, :1].expand(-1, 21, -1, -1)
    still = bench["particles"].penetration(model, disk, frozen, R, free=traj)
    assert still["max_radii"] == 0 and still["touching"] == 0 and still["mean_drop_m"] == 0
    # Before ball 0 comes near the disk (and for ball 1 throughout) the frozen rollout lags the free one.
    assert still["disturbance_radii"] > 1
    assert not bench["particles"].held_back(still, through)
    # A rollout identical to the free one before contact that stops on the disk's top: held back.
    stop = traj.clone()
    top = 1.0 + 0.3 + R
    stop[0, :, 0, 1] = torch.clamp(z, min=top)
    held = bench["particles"].penetration(model, disk, stop, R, free=traj)
    assert held["max_radii"] <= 1e-5 and held["touching"] == 0.5
    assert held["disturbance_radii"] == pytest.approx(0.0, abs=1e-6)
    assert bench["particles"].held_back(held, through)


def test_equal_steps_ratios_are_reported_beside_the_equal_time_target_never_instead(bench):
    sweep = {"all_within_noise": True, "max_increase": None, "worst_vs_noise": None}
    pe = {"ratio": {"mean_position_error": 3.0, "frame 10": 1.2}, "sweep_summary": sweep,
          "ratio_steps": {"mean_position_error": 1.1, "frame 10": 0.9}}
    ce = {"ratio": {"h=1": 1.4, "h=10": 1.3}, "sweep_summary": sweep, "ratio_steps": {"h=1": 2.0, "h=10": 1.0}}
    t = bench["report"].targets({"eval": {"particle-errors": pe, "cartpole-errors": ce}})
    assert t["particles: C-GNS error <= 1.5x forward"] is False  # equal time: still missed
    assert t["cartpole: C-GNS error <= 1.5x forward"] is True
    steps = {k: v for k, v in t.items() if "equal optimizer steps" in k}
    assert sorted(steps.values()) == [False, True] and len(t) == 6


def _imports(path: Path) -> set[str]:
    """The absolute modules ``path`` imports (relative imports resolved within ``cgns_bench``), with the
    names it takes from them as ``module:name``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = f"cgns_bench.{node.module}" if node.level else node.module
            out |= {mod} | {f"{mod}:{a.name}" for a in node.names}
    return out


def test_the_benchmark_uses_the_library_publicly_never_the_command_line_and_has_no_cycles():
    files = [SCRIPT, *sorted(PACKAGE.glob("*.py"))]
    ours = ("gndesign", "envs", "workflows", "planners")
    graph = {}
    for p in files:
        used = _imports(p)
        lib = {u for u in used if u.split(".")[0] in ours}
        assert not {u for u in lib if u.split(":")[0].endswith(".cli")}, p
        assert not {u for u in lib if any(part.startswith("_") for part in u.replace(":", ".").split("."))}, p
        graph[p.stem] = {u.split(":")[0].split(".")[1] for u in used if u.startswith("cgns_bench.")}

    def reaches(a, b, seen=()):
        return any(n == b or (n not in seen and reaches(n, b, (*seen, n))) for n in graph.get(a, ()))

    assert not [m for m in graph if reaches(m, m)], graph
    assert {p.name: n for p in files if (n := len(p.read_text().splitlines())) >= 500} == {}


@pytest.mark.parametrize("where", ["root", "elsewhere"])
def test_the_command_line_finds_its_package_from_any_directory(where, tmp_path):
    cwd = SCRIPTS.parent if where == "root" else tmp_path
    res = subprocess.run([sys.executable, str(SCRIPT), "--help"], cwd=cwd, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--quick" in res.stdout and "--constraint-iterations" in res.stdout
