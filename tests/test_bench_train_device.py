"""The training-throughput benchmark: rows for every model and batch through the real loop, and its
bad input refused before any training."""

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_train_device.py"


@pytest.fixture(scope="module")
def bench():
    return SimpleNamespace(**runpy.run_path(str(SCRIPT), run_name="bench_train_device"))


def test_every_model_and_batch_gets_a_timed_row(bench, arm_data, tmp_path):
    assert bench.main(["--data", str(arm_data), "--device", "cpu", "--batches", "4", "8", "--warmup", "2",
                       "--steps", "4", "--threads", "1", "--tag", "t", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "train_device_t.json").read_text())
    assert {"cores", "torch", "device", "gpu"} <= set(report["machine"]) and report["machine"]["device"] == "cpu"
    rows = report["rows"]
    assert [(r["kind"], r["batch_size"]) for r in rows] == [("gn", 4), ("gn", 8), ("mlp", 4), ("mlp", 8)]
    for r in rows:
        assert r["system"] == "arm" and r["steps"] == 4 and r["seconds"] > 0
        assert r["steps_per_s"] == pytest.approx(4 / r["seconds"])
        assert r["transitions_per_s"] == pytest.approx(r["steps_per_s"] * r["batch_size"])
    md = (tmp_path / "train_device_t.md").read_text()
    assert md.count("| arm |") == 4


def test_the_recipes_are_the_benchmarks_with_the_batch_replaced(bench):
    opts = bench.recipe("gn", "acrobot", 4096)
    assert "model.edge_target_stats=true" in opts and opts.count("train.batch_size=4096") == 1
    assert not any(o.startswith("train.batch_size=") and o != "train.batch_size=4096" for o in opts)
    assert "model.kind=mlp" in bench.recipe("mlp", "acrobot", 64)


@pytest.mark.parametrize("args, message", [
    (["--steps", "5", "--warmup", "2"], "must be a positive multiple of --warmup"),
    (["--batches", "0"], "--batches must be positive"),
    (["--tag", "a/b"], "--tag 'a/b'"),
    (["--device", "cuda:0"], "sees no GPU"),
])
def test_bad_input_is_one_line_before_any_training(bench, arm_data, tmp_path, capsys, args, message):
    if "cuda:0" in args and torch.cuda.is_available():
        pytest.skip("torch sees a GPU here")
    assert bench.main(["--data", str(arm_data), "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def test_an_out_that_is_a_file_is_refused_and_left_as_it_was(bench, arm_data, tmp_path, capsys):
    out = tmp_path / "results"
    out.write_text("mine")
    args = ["--data", str(arm_data), "--out", str(out), "--batches", "4", "--warmup", "1", "--steps", "1"]
    assert bench.main(args) == 2
    assert f"cannot write {out}" in capsys.readouterr().err and out.read_text() == "mine"
