"""The MPC benchmark's issue-15 cells (policy, policy-guided MPC) run on a few steps and report what
results/mpc_policy.md shows: the same seeds in every cell, the commands, the verdicts against the oracle."""

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_mpc.py"


def test_policy_cells_share_seeds_and_report_verdicts(tmp_path):
    bench = SimpleNamespace(**runpy.run_path(str(SCRIPT), run_name="bench_mpc"))
    out = tmp_path / "mpc_policy.json"
    bench.policy_cells(list(bench.POLICY_CELLS), episodes=2, seed=100, steps=16, out_path=out)
    r = json.loads(out.read_text())
    assert set(r["cells"]) == set(bench.POLICY_CELLS)
    for name, c in r["cells"].items():
        assert c["seeds"] == [100, 101] and len(c["returns"]) == 2 and c["mean_latency_s"] > 0
        assert "--seed 100" in c["command"] and "--episodes 2" in c["command"] and "--steps 16" in c["command"]
        if name == "oracle_mppi_256x150":  # the generous MuJoCo oracle
            assert c["horizon"] == 150 and c["replan_every"] == 1 and "planner.samples=256" in c["command"]
            assert c["mean_evaluations"] >= 256 * 3 * 150
        elif name == "oracle_mppi_128x150_every8":  # the long-horizon oracle swimmer6 can afford
            assert c["horizon"] == 150 and c["replan_every"] == 8 and "planner.samples=128" in c["command"]
            assert c["mean_evaluations"] >= 128 * 150 and "planner.iterations=1" in c["command"]
        elif name == "oracle_mppi_same_interval":  # MuJoCo, the task's planner, replanning as the guided one does
            assert c["horizon"] == 120 and c["replan_every"] == 8 and "--model mujoco --planner mppi" in c["command"]
        elif name != "policy_alone":
            every = 16 if name.endswith("_replan_x2") else 8
            assert c["horizon"] == 64 and c["replan_every"] == every and c["mean_evaluations"] > 0
            assert f"--replan-every {every} " in c["command"]
            assert "planner.iterations=2" in c["command"] and c["mean_cpu_s"] > 0
            assert ("--policy" in c["command"]) == name.startswith("guided")
    assert r["cells"]["guided_gradient_mpc_one_at_a_time"]["lockstep"] == 1
    assert r["cells"]["gradient_mpc_one_at_a_time_replan_x2"]["lockstep"] == 1
    assert r["cells"]["guided_gradient_mpc"]["lockstep"] == 2  # min(10, episodes)
    # 16 control steps score far below 850: the verdicts say so, against every oracle in results/mpc.json
    assert r["verdicts"][0].startswith("guided >= 850") and "MISSED" in r["verdicts"][0]
    assert sum("0.97x the oracle" in v for v in r["verdicts"]) == len(r["oracles"]) >= 1
    assert any(v.startswith("guided real-time factor") for v in r["verdicts"])
    # replanning half as often: real time and return against the best oracle, with and without the policy
    sparse = [v for v in r["verdicts"] if "replanning every 16, one episode at a time" in v]
    assert len(sparse) == 2 and sparse[0].startswith("guided,") and "not the target's" in sparse[1]
    assert all("MISSED" in v for v in sparse)  # 16 control steps are far from the oracle's return
    md = out.with_suffix(".md").read_text()
    assert any("mppi 256 x 150" in v for v in r["verdicts"])  # the strong oracles are among them
    assert any("(oracle_mppi_same_interval)" in v for v in r["verdicts"])
    for text in ("policy_alone", "gradient_mpc_same_budget", "oracle_mppi_256x150", "Targets"):
        assert text in md


def test_swimmer_policy_cells_use_the_coarse_model_its_policy_and_the_swimmer_targets(tmp_path):
    bench = SimpleNamespace(**runpy.run_path(str(SCRIPT), run_name="bench_mpc"))
    out = tmp_path / "mpc_policy_swimmer6.json"
    bench.policy_cells(["policy_alone", "guided_gradient_mpc"], episodes=2, seed=100, steps=8, out_path=out,
                       task="swimmer6")
    r = json.loads(out.read_text())
    assert r["task"] == "swimmer6" and r["model"] == "pretrained:swimmer6-k4"
    g = r["cells"]["guided_gradient_mpc"]
    assert g["action_repeat"] == 4 and g["horizon"] == 32 and g["replan_every"] == 4 and g["seeds"] == [100, 101]
    assert g["command"].startswith("OMP_NUM_THREADS=1 gndesign plan swimmer6 --model pretrained:swimmer6-k4 --policy "
                                   "pretrained:swimmer6-policy --value-weight 0 ")
    assert g["value_weight"] == 0.0  # the swimmer policy's plan guides, its value does not
    assert r["cells"]["policy_alone"]["action_repeat"] == 4
    assert not any(v.startswith("guided >= 850") or v.startswith("policy alone") for v in r["verdicts"])
    assert sum("0.9x the oracle swimmer6/mujoco" in v for v in r["verdicts"]) == len(r["oracles"]) >= 1
    assert out.with_suffix(".md").read_text().startswith("# swimmer6: policy, policy-guided MPC")
