"""The design benchmark's merge of design spaces (``--scaling``): one row per space, issue 17's
K >= 16 verdict counted per target, the figure written; refinement refused for bars."""

import json
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_design.py"


def _report(path: Path, obstacle: str, segments: int, gradient: list[float], cem: list[float]) -> Path:
    dim = segments * (3 if obstacle == "bars" else 1)
    targets = ["1.2", "1.5", "1.8", "2", "2.2"]
    runs = {t: {"gradient": {"obstacle": obstacle, "segments": segments, "design_dim": dim}} for t in targets}
    scores = {"initial": [0.0] * 5, "gradient": gradient, "cem-mujoco": cem}
    report = {"runs": runs, "machine": {"cores": 2}, "protocol": {"budgets": "cem-mujoco: 10 x the gradient's time"},
              "summary": {"scores": scores, "mean_score": {k: sum(v) / 5 for k, v in scores.items()},
                          "mean_seconds": {"gradient": 20.0, "cem-mujoco": 200.0}}}
    path.write_text(json.dumps(report))
    return path


def test_scaling_merges_design_spaces_and_counts_wins_per_target(tmp_path):
    bench = SimpleNamespace(**runpy.run_path(str(SCRIPT), run_name="bench_design"))
    paths = [_report(tmp_path / "k4.json", "chain", 4, [0.9] * 5, [0.5] * 5),  # K < 16: no verdict
             _report(tmp_path / "k16.json", "chain", 16, [0.9, 0.9, 0.9, 0.9, 0.1], [0.5] * 5),
             _report(tmp_path / "k32.json", "chain", 32, [0.6, 0.9, 0.9, 0.1, 0.1], [0.5] * 5),
             _report(tmp_path / "bars8.json", "bars", 8, [0.2] * 5, [0.5] * 5)]
    result = bench.scaling([str(p) for p in paths], tmp_path / "out")
    assert list(result["spaces"]) == ["chain K = 4 (4 parameters)", "chain K = 16 (16 parameters)",
                                      "chain K = 32 (32 parameters)", "bars K = 8 (24 parameters)"]
    assert result["verdicts"] == [
        "chain K = 16 (16 parameters): gradient beats CEM on MuJoCo on 4 of 5 targets (target: at least 4): met",
        "chain K = 32 (32 parameters): gradient beats CEM on MuJoCo on 3 of 5 targets (target: at least 4): MISSED",
        "bars K = 8 (24 parameters): gradient beats CEM on MuJoCo on 0 of 5 targets (target: at least 4): MISSED"]
    md = (tmp_path / "out" / "design_scaling.md").read_text()
    assert "| chain K = 32 (32 parameters) | 0.50 | 0.52 |" in md
    assert (tmp_path / "out" / "design_scaling.png").stat().st_size > 1000


def test_scaling_merges_reports_of_one_space_the_last_report_of_a_method_wins(tmp_path):
    bench = SimpleNamespace(**runpy.run_path(str(SCRIPT), run_name="bench_design"))
    old = _report(tmp_path / "old.json", "chain", 16, [0.1] * 5, [0.5] * 5)
    new = tmp_path / "new.json"
    report = json.loads(_report(new, "chain", 16, [0.9, 0.9, 0.9, 0.9, 0.1], [0.0] * 5).read_text())
    for part in ("scores", "mean_score"):  # the newer report has no CEM on MuJoCo: the older one's stays
        del report["summary"][part]["cem-mujoco"]
    new.write_text(json.dumps(report))
    result = bench.scaling([str(old), str(new)], tmp_path / "out")
    row = result["spaces"]["chain K = 16 (16 parameters)"]
    assert row["scores"]["gradient"] == [0.9, 0.9, 0.9, 0.9, 0.1] and row["scores"]["cem-mujoco"] == [0.5] * 5
    assert row["sources"] == {"initial": str(new), "gradient": str(new), "cem-mujoco": str(old)}
    assert result["verdicts"] == [
        "chain K = 16 (16 parameters): gradient beats CEM on MuJoCo on 4 of 5 targets (target: at least 4): met"]
    other = json.loads(old.read_text())
    other["runs"] = {t: other["runs"]["1.2"] for t in ("1.2", "1.5")}
    old.write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="differ"):
        bench.scaling([str(new), str(old)], tmp_path / "out2")


def test_refinement_is_refused_for_bars(tmp_path, monkeypatch):
    """The refined loop writes chain datasets: asked for bars, the benchmark says so before running anything."""
    bench = runpy.run_path(str(SCRIPT), run_name="bench_design")
    monkeypatch.setattr(sys, "argv", ["bench_design.py", "--obstacle", "bars", "--segments", "8", "--methods",
                                      "gradient", "gradient-refined", "--cache", str(tmp_path / "c"), "--out",
                                      str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="chain designs.*drop it from --methods for bars"):
        bench["main"]()
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()
