"""Forward-model benchmarks: GN vs MLP per system, multi-system, zero-shot swimmers, speed.

Writes ``results/forward.json`` and ``results/forward.md`` (with the machine: cores, torch version).

    python scripts/bench_forward.py --only single --systems swimmer6   # GN vs MLP, 20 min each
    python scripts/bench_forward.py --only steps --systems swimmer6    # + the MLP at the GN's step count
    python scripts/bench_forward.py --only multi     # pretrained:multi against the single-system GNs
    python scripts/bench_forward.py --only zeroshot  # swimmers 3-6, 8, 9 -> 7, 10-14; a GN trained on 7, 10-12
    python scripts/bench_forward.py                  # everything (five 20-minute pairs, the equal-steps
                                                     # MLPs, a 40-minute zero-shot GN and its
                                                     # reference trained on the test sizes, multi)
    python scripts/bench_forward.py --minutes 1 --quick   # a fast smoke version

Every system gets the same data (generated with a fixed seed) and the GN and the MLP the same
wall-clock training budget (``--only steps`` adds the MLP at the GN's number of optimizer steps).
The multi-system GN is the shipped ``pretrained:multi`` (``scripts/make_pretrained.py --only
multi``: the five systems' data with the same seeds, plus more swimmers), evaluated on the
single-system GNs' held-out episodes; its training time is reported against their total.
Rollout errors are measured on held-out episodes; the 1000-step stability check uses separate
1000-step episodes. Jobs run two at a time, one thread each; every invocation merges its jobs into
the report, so systems can be run one at a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from gndesign.io import machine_info

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ["pendulum", "cartpole", "acrobot", "swimmer6", "cheetah"]
SWIM_TRAIN = [3, 4, 5, 6, 8, 9]
SWIM_TEST = [7, 10, 11, 12, 13, 14]
SWIM_SEEN = [7, 10, 11, 12]  # the zero-shot reference's sizes (see main)
HORIZONS = (1, 10, 50, 100)
# The GN: message passing covers its deepest tree (model.message_passing_steps unset), one hidden
# layer per MLP, batches of 64 (on swimmer6 in 5 minutes: validation loss 0.012 against 0.030 with two
# layers and batches of 256). The MLP keeps batches of 256 (64 did not help it: 0.0178 vs 0.0171).
# Both keep an average of their weights (train.ema_decay): on acrobot the average of the same run erred
# 2.4-4.5x less at h=100 than its last weights, for the GN and the MLP alike.
EMA = ["train.ema_decay=0.999"]
MODEL = {"gn": ["model.latent_size=64", "model.mlp_hidden_size=64", "model.mlp_layers=1", "train.batch_size=64",
                "train.datasets_per_batch=1", *EMA],
         "mlp": ["model.kind=mlp", "model.mlp_hidden_size=256", "model.mlp_layers=3", *EMA]}
# Per system, added to the GN's recipe: the small trees (2-3 bodies) are cheap graphs, so batches of 256
# (at 20 minutes, h=100: cartpole 0.041 -> 0.026 m with limit features, acrobot 0.047 -> 0.036 m); the
# cart's rail ends (a quarter of cartpole's states) get limit features (one-step loss 0.0126 -> 0.0046).
# Cheetah's targets are normalized per joint edge: pooled over its hinges, the torso's pitch (its
# accelerations spread 3-5x narrower than the legs') weighed ~16x less than in the MLP's loss
# (h=100 0.114 -> 0.088 m at 20 minutes, seed 0). So are acrobot's: pooled, the shoulder's errors weighed
# 6x less than the elbow's (h=100, four-seed mean 0.0472 -> 0.0359 m).
GN_SYSTEM = {"pendulum": ["train.batch_size=256"],
             "acrobot": ["train.batch_size=256", "model.edge_target_stats=true"],
             "cartpole": ["train.batch_size=256", "model.limit_features=true"],
             "cheetah": ["model.edge_target_stats=true"]}
log = logging.getLogger("bench_forward")


def dataset(name: str, episodes: int, steps: int, seed: int, root: Path) -> Path:
    from envs.generate import generate_dataset

    out = root / f"{name}-{episodes}x{steps}-s{seed}"
    if not (out / "meta.json").exists():
        generate_dataset(name, episodes=episodes, steps=steps, seed=seed, out_dir=out, workers=2,
                         overwrite=True, progress=False)
    return out


def train_job(job: dict) -> dict:
    """Train one model and evaluate it (runs in a worker process, one thread)."""
    import torch

    torch.set_num_threads(1)
    from gndesign.config import load_config
    from gndesign.training import train

    run = Path(job["run"])
    budget = [f"train.minutes={job['minutes']}", "train.steps=1000000"] if job.get("steps") is None else \
        [f"train.steps={job['steps']}"]
    options = job.get("options", MODEL[job["kind"]])
    cfg = load_config(None, options + budget + ["train.eval_every=200", "train.log_every=100",
                                                f"train.seed={job.get('seed', 0)}"])
    cfg.data = job["train_data"]
    t0 = time.time()
    if not (run / "checkpoints" / "latest.pt").exists():
        summary = train(cfg, run, progress=False)
    else:
        summary = reused_summary(run)
    out = {"job": job["name"], "kind": job["kind"], "train_seconds": time.time() - t0, "summary": summary,
           "minutes": job.get("minutes"), "steps": job.get("steps"), "options": options,
           "train_episodes": job.get("episodes"), "checkpoint": str(run / "checkpoints" / "latest.pt")}
    return evaluate_job(out, job["eval_data"])


def reused_summary(run: Path) -> dict:
    """What the training summary of an existing run says, read back: its checkpoint's step, and from
    its metrics the clock and the last training and validation losses."""
    from gndesign.checkpoints import read_checkpoint
    from gndesign.training import Metrics

    metrics = Metrics.read(run / "metrics.csv")
    val = [r["val_loss"] for r in metrics.rows if r["val_loss"]]
    step = int(read_checkpoint(run / "checkpoints" / "latest.pt")["step"])
    last = metrics.rows[-1] if metrics.rows else {}
    return {"note": "reused an existing run", "step": step, "seconds": metrics.last_time,
            "train_loss": float(last["train_loss"]) if last.get("train_loss") else None,
            "val_loss": float(val[-1]) if val else None}


def evaluate_job(out: dict, eval_data: list[str], which: str = "auto") -> dict:
    """Add ``out["eval"]``: errors of ``out["checkpoint"]`` on each dataset's held-out episodes
    (``which``: see :func:`gndesign.forward_training.held_out_episodes`)."""
    import torch

    torch.set_num_threads(1)
    from gndesign.checkpoints import load_model
    from gndesign.datasets.trajectories import TrajectoryDataset
    from gndesign.evaluation import evaluate
    from gndesign.forward_training import held_out_episodes, system_spec

    out["eval"] = {}
    for path in eval_data:
        ds = TrajectoryDataset.load(path)
        model, blob = load_model(out["checkpoint"], "forward", system=ds.system, allow_new_system=True)
        if out["kind"] == "gn":
            out["message_passing_steps"] = model.config.message_passing_steps
            out["per_system_depth"] = model.config.per_system_depth
        if ds.system not in model.systems:
            model.add_system(system_spec(ds))
        episodes, which_set = held_out_episodes(blob, ds, which if ds.steps < 1000 else "auto")
        horizons = tuple(h for h in HORIZONS if h <= ds.steps) if ds.steps < 1000 else (100, 1000)
        res = evaluate(model, ds, episodes, horizons)
        res["episode_set"] = which_set
        if out["kind"] == "gn":  # whose statistics normalize this system (its own if trained on it)
            res["statistics_from"] = model.statistics_source(ds.system) or "pooled"
        out["eval"][path] = res
    return out


def shipped_multi(train_data: dict[str, str], episodes: int) -> dict | None:
    """``pretrained:multi`` (``scripts/make_pretrained.py --only multi``) on the single-system GNs'
    held-out episodes: it trained on the same five datasets (same seeds) with the same split. None
    (with the reason logged) when it was not trained on this benchmark's data."""
    import json

    from gndesign.checkpoints import resolve_checkpoint

    info = json.loads((ROOT / "results" / "pretrained.json").read_text()).get("multi")
    if info is None:
        log.warning("results/pretrained.json has no 'multi' entry: run scripts/make_pretrained.py --only multi")
        return None
    same = {s: [s, episodes, 0] in [list(d) for d in info["data"]] for s in SYSTEMS}
    if not all(same.values()):
        log.warning(f"pretrained:multi was not trained on this benchmark's data ({episodes} episodes, seed 0) of "
                    f"{[s for s, ok in same.items() if not ok]}: skipped (rebuild it, or use --episodes 1000)")
        return None
    out = {"job": "multi-gn", "kind": "gn", "checkpoint": str(resolve_checkpoint("pretrained:multi")),
           "minutes": info["train_seconds"] / 60 if info.get("train_seconds") else None,
           "steps": info["steps"], "summary": {"step": info["steps"]}, "train_episodes": episodes,
           "train_data": info["data"], "train_seconds": info.get("train_seconds")}
    return evaluate_job(out, [train_data[s] for s in SYSTEMS], which="validation")


def speed(system: str, checkpoint: str, data: str) -> dict:
    """Batched inference throughput of the learned model vs MuJoCo's own step rate."""
    import mujoco
    import torch

    from gndesign.checkpoints import load_model
    from gndesign.datasets.trajectories import TrajectoryDataset

    torch.set_num_threads(1)
    ds = TrajectoryDataset.load(data)
    model, _ = load_model(checkpoint, "forward", system=system)
    B = 1024
    idx = np.random.default_rng(0).integers(0, ds.num_episodes, B)
    q = torch.as_tensor(ds.qpos[idx, 0], dtype=torch.float32)
    v = torch.as_tensor(ds.qvel[idx, 0], dtype=torch.float32)
    a = torch.as_tensor(ds.action[idx, 0], dtype=torch.float32)
    with torch.no_grad():
        model.step(q, v, a)
        t = time.perf_counter()
        reps = 5
        for _ in range(reps):
            model.step(q, v, a)
        learned = reps * B / (time.perf_counter() - t)
    m = ds.base_model()
    d = mujoco.MjData(m)
    t = time.perf_counter()
    for i in range(B):
        d.qpos[:], d.qvel[:], d.ctrl[:] = ds.qpos[idx[i], 0], ds.qvel[idx[i], 0], ds.action[idx[i], 0]
        for _ in range(ds.n_substeps):
            mujoco.mj_step(m, d)
    mj = B / (time.perf_counter() - t)
    return {"batch": B, "learned_states_per_s": learned, "mujoco_states_per_s": mj,
            "note": "one control step per state; MuJoCo single-threaded, n_substeps mj_step calls"}


def time_to_accuracy(run: Path, rel: float = 1.05) -> dict:
    """Seconds until the validation loss first came within ``rel`` of its final value."""
    from gndesign.training import Metrics

    rows = [r for r in Metrics.read(run / "metrics.csv").rows if r.get("val_loss")]
    final = float(rows[-1]["val_loss"])
    first = next(r for r in rows if float(r["val_loss"]) <= rel * final)
    return {"final_val_loss": final, "seconds_to_within_5pct": float(first["time_s"]),
            "total_seconds": float(rows[-1]["time_s"]), "graphs_per_s": float(rows[-1]["graphs_per_s"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=20.0, help="training budget per single-system model")
    p.add_argument("--episodes", type=int, default=1000, help="training episodes (200 steps) per system")
    p.add_argument("--only", choices=["single", "steps", "multi", "zeroshot", "all"], default="all")
    p.add_argument("--quick", action="store_true", help="small data, for a smoke run")
    p.add_argument("--systems", nargs="+", choices=SYSTEMS, default=SYSTEMS, help="systems for --only single")
    p.add_argument("--models", nargs="+", choices=["gn", "mlp"], default=["gn", "mlp"],
                   help="models for --only single (rerun one side, e.g. after a change of the GN's features)")
    p.add_argument("--seed", type=int, default=0,
                   help="training seed of --only single (also the held-out split); jobs of seeds other than 0 "
                        "are named SYSTEM-MODEL-sSEED")
    p.add_argument("--rerun", action="store_true", help="retrain even if a run directory exists")
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_forward"))
    p.add_argument("--out", default=str(ROOT / "results" / "forward.json"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    work = Path(args.work)
    eps = 24 if args.quick else args.episodes
    data_root = work / "data"
    jobs = []
    train_data = {s: str(dataset(s, eps, 200, 0, data_root)) for s in SYSTEMS}
    long_data = {s: str(dataset(s, 8, 1000, 99, data_root)) for s in SYSTEMS}
    if args.only in ("single", "all"):
        seed = f"-s{args.seed}" if args.seed else ""
        for s in args.systems:
            for kind in args.models:
                jobs.append({"name": f"{s}-{kind}{seed}", "kind": kind, "minutes": args.minutes, "episodes": eps,
                             "options": MODEL[kind] + (GN_SYSTEM.get(s, []) if kind == "gn" else []),
                             "seed": args.seed, "run": str(work / f"{s}-{kind}{seed}"),
                             "train_data": [train_data[s]], "eval_data": [train_data[s], long_data[s]]})
    out_path = Path(args.out)
    report = json.loads(out_path.read_text()) if out_path.exists() else {}
    if args.only == "steps":  # needs the GN's step count: after --only single
        for s in args.systems:
            gn = (report.get("jobs") or {}).get(f"{s}-gn")
            if gn is None:
                raise SystemExit(f"no {s}-gn job in {out_path}: run --only single --systems {s} first")
            jobs.append({"name": f"{s}-mlp-steps", "kind": "mlp", "steps": int(gn["summary"]["step"]),
                         "episodes": eps, "run": str(work / f"{s}-mlp-steps"), "train_data": [train_data[s]],
                         "eval_data": [train_data[s], long_data[s]]})
    if args.only in ("zeroshot", "all"):
        swim_train = [str(dataset(f"swimmer{n}", eps // 2, 200, 10 + n, data_root)) for n in SWIM_TRAIN]
        swim_test = {n: str(dataset(f"swimmer{n}", 16, 200, 50 + n, data_root)) for n in SWIM_TEST}
        jobs.append({"name": "swimmers-gn", "kind": "gn", "minutes": 2 * args.minutes, "episodes": eps // 2,
                     "run": str(work / "swimmers-gn"), "train_data": swim_train,
                     "eval_data": swim_train + list(swim_test.values())})
        # The unseen sizes' in-distribution reference: the same recipe and budget, trained on the test
        # sizes themselves (other episodes), scored on the same test episodes. Swimmers 13 and 14 are left
        # out: each 500-episode draw tried held an episode that diverges in MuJoCo (13: seeds 23, 43, 83;
        # 14: seed 84).
        swim_seen = [str(dataset(f"swimmer{n}", eps // 2, 200, 10 + n, data_root)) for n in SWIM_SEEN]
        jobs.append({"name": "swimmers-seen-gn", "kind": "gn", "minutes": 2 * args.minutes, "episodes": eps // 2,
                     "run": str(work / "swimmers-seen-gn"), "train_data": swim_seen,
                     "eval_data": [swim_test[n] for n in SWIM_SEEN]})
    if args.rerun:
        import shutil

        for job in jobs:
            shutil.rmtree(job["run"], ignore_errors=True)
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = {r["job"]: r for r in pool.map(train_job, jobs)}

    multi = shipped_multi(train_data, eps) if args.only in ("multi", "all") else None
    if multi is not None:
        results["multi-gn"] = multi
    elif args.only == "multi":
        raise SystemExit("nothing to evaluate: see the warning above")
    report.setdefault("jobs", {}).update(results)
    report["machine"] = machine_info(threads_per_job=1)
    report["settings"] = {"minutes_per_single_model": args.minutes, "episodes": eps, "steps": 200,
                          "horizons": HORIZONS, "models": MODEL,
                          "note": "each job records its own budget (minutes or steps), episodes and options"}
    if "cartpole-gn" in results:
        report["cartpole_training"] = time_to_accuracy(work / "cartpole-gn")
    report.setdefault("speed", {}).update({s: speed(s, results[f"{s}-gn"]["checkpoint"], train_data[s])
                                           for s in SYSTEMS if f"{s}-gn" in results})
    from gndesign.io import atomic_write_json, atomic_write_text

    atomic_write_json(out_path, report)
    atomic_write_text(out_path.with_suffix(".md"), markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"Machine: {m['cores']} cores ({m['cpu']}), torch {m['torch']}, one thread per training job. "
             "Budget: minutes of training (or optimizer steps for `mlp-steps`, the MLP at the GN's step count); "
             "M: the GN's message-passing steps; errors on held-out episodes.", ""]
    jobs = r["jobs"]
    if any(f"{s}-gn" in jobs for s in SYSTEMS):
        lines += ["| system | model | budget | steps | M | train episodes | one-step loss | body err h=1 [m] | h=10 "
                  "| h=50 | h=100 | h=1000 finite |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in SYSTEMS:
            seeded = sorted(n[len(s) + 1:] for n in jobs if re.fullmatch(rf"{s}-(gn|mlp)-s\d+", n))
            for kind in ("gn", "mlp", "mlp-steps", *seeded):
                j = jobs.get(f"{s}-{kind}")
                if not j:
                    continue
                ev = list(j["eval"].values())
                e, long = ev[0], ev[1] if len(ev) > 1 else None
                b = e["body_pos_error"]
                fin = long["finite"].get(1000, long["finite"].get("1000")) if long else "-"
                budget = f"{j['steps']} steps" if j.get("steps") else f"{j.get('minutes')} min"
                lines.append(f"| {s} | {kind} | {budget} | {j['summary'].get('step', '-')} | "
                             f"{j.get('message_passing_steps') or '-'} | {j.get('train_episodes', '-')} | "
                             f"{e['one_step_loss']:.4f} | {_g(b, 1):.5f} | {_g(b, 10):.4f} | {_g(b, 50):.4f} | "
                             f"{_g(b, 100):.4f} | {fin} |")
        lines.append("")
    if "multi-gn" in jobs:
        j = jobs["multi-gn"]
        trained_on = ", ".join(d[0] for d in j.get("train_data", [])) or "the five systems"
        minutes = f"{j['minutes']:.0f} min" if j.get("minutes") else "time not recorded"
        lines += [f"Multi-system GN `pretrained:multi` (one model trained on {trained_on}; {j.get('steps')} steps, "
                  f"{minutes} on one thread; M = {j.get('message_passing_steps')}"
                  f"{', each system to its own depth' if j.get('per_system_depth') else ''}) vs the single-system GNs "
                  "(their own budgets and M), on the same held-out episodes:", "",
                  "| system | multi one-step loss | single one-step loss | multi h=100 [m] | single h=100 [m] | "
                  "single budget, M |", "|---|---|---|---|---|---|"]
        for e in j["eval"].values():
            s = e["system"]
            single = jobs.get(f"{s}-gn")
            se = list(single["eval"].values())[0] if single else None
            if se is None:
                lines.append(f"| {s} | {e['one_step_loss']:.5f} | - | {_g(e['body_pos_error'], 100):.4f} | - | - |")
                continue
            lines.append(f"| {s} | {e['one_step_loss']:.5f} | {se['one_step_loss']:.5f} | "
                         f"{_g(e['body_pos_error'], 100):.4f} | {_g(se['body_pos_error'], 100):.4f} | "
                         f"{single.get('minutes')} min, {single.get('message_passing_steps')} |")
        lines.append("")
    if "swimmers-gn" in jobs:
        j = jobs["swimmers-gn"]
        lines += [f"Zero-shot swimmers (trained on 3-6, 8, 9 links; {j.get('minutes')} min, M = "
                  f"{j.get('message_passing_steps')}), body error [m]:", "",
                  "| swimmer | set | normalized as | h=10 | h=50 | h=100 |", "|---|---|---|---|---|---|"]
        for e in jobs["swimmers-gn"]["eval"].values():
            b = e["body_pos_error"]
            lines.append(f"| {e['system']} | {e['episode_set']} | {e.get('statistics_from', 'pooled')} | "
                         f"{_g(b, 10):.4f} | {_g(b, 50):.4f} | {_g(b, 100):.4f} |")
        lines.append("")
    if "swimmers-gn" in jobs and "swimmers-seen-gn" in jobs:
        seen = {e["system"]: e["body_pos_error"] for e in jobs["swimmers-seen-gn"]["eval"].values()}
        zero = {e["system"]: e["body_pos_error"] for e in jobs["swimmers-gn"]["eval"].values() if e["system"] in seen}
        zero = dict(sorted(zero.items(), key=lambda kv: int(kv[0][len("swimmer"):])))  # by size
        j = jobs["swimmers-seen-gn"]
        lines += [f"The unseen sizes against a GN trained on {', '.join(zero)} "
                  f"(the same recipe and budget, {j['summary'].get('step')} steps against "
                  f"{jobs['swimmers-gn']['summary'].get('step')}; other episodes of the same sizes), on the same "
                  "test episodes, body error [m]:", "",
                  "| swimmer | zero-shot h=50 | trained on it h=50 | ratio | zero-shot h=100 | trained on it h=100 "
                  "| ratio |", "|---|---|---|---|---|---|---|"]
        for s, b in zero.items():
            z50, s50, z100, s100 = _g(b, 50), _g(seen[s], 50), _g(b, 100), _g(seen[s], 100)
            lines.append(f"| {s} | {z50:.4f} | {s50:.4f} | {z50 / s50:.2f} | {z100:.4f} | {s100:.4f} "
                         f"| {z100 / s100:.2f} |")
        z50 = np.mean([_g(b, 50) for b in zero.values()])
        s50 = np.mean([_g(seen[s], 50) for s in zero])
        lines += [f"| mean | {z50:.4f} | {s50:.4f} | {z50 / s50:.2f} | | | |", ""]
    if "cartpole_training" in r:
        c = r["cartpole_training"]
        lines.append(f"Cartpole GN: within 5% of its final validation loss after {c['seconds_to_within_5pct']:.0f} s "
                     f"(of {c['total_seconds']:.0f} s); training throughput {c['graphs_per_s']:.0f} graphs/s.")
    if "speed" in r:
        lines += ["", "| system | learned model states/s (batch 1024) | MuJoCo states/s |", "|---|---|---|"]
        for s, v in r["speed"].items():
            lines.append(f"| {s} | {v['learned_states_per_s']:.0f} | {v['mujoco_states_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def _g(d: dict, h: int):
    return d.get(h, d.get(str(h), float("nan")))


if __name__ == "__main__":
    main()
