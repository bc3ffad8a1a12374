"""The speed benchmark's functions run on tiny sizes and report what results/speed.md shows."""

import runpy
from pathlib import Path
from types import SimpleNamespace

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_speed.py"


def test_bench_speed_quick_run_reports_every_figure(cartpole_data):
    bench = SimpleNamespace(**runpy.run_path(str(SCRIPT), run_name="bench_speed"))
    r = bench.run_all(quick=True, train_data=str(cartpole_data), train_seconds=1.0)
    assert r["k"] == 1 and {"cores", "torch", "load_average"} <= set(r["machine"])
    for x in r["rollout"].values():
        assert x["reference_s_per_control_s"] > 0 and x["lean_s_per_control_s"] > 0
    for x in r["inference"].values():
        assert min(x["reference_control_s_per_s"], x["lean_control_s_per_s"], x["mujoco_control_s_per_s"]) > 0
    for w in bench.PATHS:
        assert r["training"][w]["graphs_per_s"] > 0 and r["mpc"][w]["latency_s"] > 0
    assert "return_mean" in r["mpc"]["lean"] and r["particles"]["s_fwd_bwd"] > 0
    md = bench.markdown(r)
    for text in ("rollout fwd+bwd", "MuJoCo", "training", "Gradient MPC", "Particles", "k = 1"):
        assert text in md
