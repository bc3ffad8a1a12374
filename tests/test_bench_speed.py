"""The speed benchmark's functions run on tiny sizes and report what results/speed.md shows."""

import runpy
from pathlib import Path
from types import SimpleNamespace

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_speed.py"


def test_bench_speed_quick_run_reports_every_figure(cartpole_data):
    bench = SimpleNamespace(**runpy.run_path(str(SCRIPT), run_name="bench_speed"))
    r = bench.run_all(quick=True, train_data=str(cartpole_data), train_seconds=1.0)
    assert r["ks"] == [1, 2] and {"cores", "torch", "load_average"} <= set(r["machine"])
    assert set(r["rollout"]) == {f"{n}/b8/k{k}" for n in ("cartpole", "swimmer6") for k in (1, 2)}
    for key, x in r["rollout"].items():
        assert x["reference_s_per_control_s"] > 0 and x["lean_s_per_control_s"] > 0
        assert x["k"] == int(key[-1]) and x["model_steps"] * x["k"] == x["horizon"]
        today = r["rollout"][key[:-1] + "1"]["reference_s_per_control_s"]
        assert abs(x["lean_vs_today"] - today / x["lean_s_per_control_s"]) < 1e-9
    for x in r["inference"].values():
        rates = [x[f"{w}_control_s_per_s"] for w in ("reference", "lean_k1", "lean_k2", "mujoco")]
        assert min(rates) > 0 and set(x["lean_vs_mujoco"]) == {1, 2}
    for w in bench.PATHS:
        assert r["training"][w]["graphs_per_s"] > 0 and r["mpc"]["k1"][w]["latency_s"] > 0
    k8 = r["mpc"]["k8"]
    assert k8["k"] == 8 and "return_mean" in k8["lean"] and r["particles"]["s_fwd_bwd"] > 0
    md = bench.markdown(r)
    for text in ("rollout fwd+bwd", "MuJoCo", "training", "Gradient MPC", "Particles", "k = 1", "cartpole-k8"):
        assert text in md
