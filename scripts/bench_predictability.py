"""How predictable is the obstacle scene? MuJoCo against itself from perturbed layouts, beside a
learned particle simulator's error on the same episodes.

Writes ``results/predictability.json`` and ``results/predictability.md`` (with the machine).

    python scripts/bench_predictability.py              # 50 episodes, ~7 min on two cores
    python scripts/bench_predictability.py --designs results/design_seeds/k4_verify3_s*/design.json

Protocol: episodes ``0 .. --episodes - 1`` of the obstacle-scene dataset with seed ``--seed`` (by
default ``pretrained:obstacle``'s 50 validation episodes, drawn exactly as ``gndesign generate
obstacle-scene`` draws them: a random chain design and a random ball layout each). Every episode is
simulated in MuJoCo as drawn (the reference), then again with every ball's initial position moved by
an isotropic normal of standard deviation ``delta`` per coordinate (``--deltas``, ``--repeats``
draws each). The divergence at frame F is the mean ball distance between the two at F, the metric of
``gndesign evaluate`` for particle models; the learned model (``--model``, ``none`` to skip) is
rolled out open-loop from the reference's layout and scored the same way. The divergence for delta is
the error of an exact simulator whose start is delta off: a learned model already further off than
delta early on cannot be expected to err less than that later.

With ``--designs`` (reports of ``scripts/bench_design.py``), the same for the scores the design
benchmark compares: every final design there (and every refined round's) is scored in MuJoCo from
its problem's layout (reproducing the report's score, or refused) and from that layout moved by each
delta. The mean absolute change is the predicted/true gap that a simulator as far off as delta would
show by chaos alone (the report's own gaps stand beside it); the mean change says how much of a
score was particular to the one layout (a design optimized on MuJoCo from that layout may lose more).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from envs.obstacle.goals import get_design_goal
from envs.obstacle.scene import SceneConfig, design_fk, initial_positions
from envs.obstacle.simulation import episode_setup, simulate
from gndesign.errors import GndesignError
from gndesign.io import atomic_write_json, atomic_write_text, check_finite, check_output, machine_info
from gndesign.particle_evaluation import summarize_position_errors
from workflows.refine import refined_best

ROOT = Path(__file__).resolve().parents[1]


def divergence(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[E, T+1]``: the mean over balls of the distance between rollouts ``a`` and ``b [E, T+1, N, 2]``."""
    return np.linalg.norm(a - b, axis=-1).mean(-1)


def perturbed_divergence(cfg: SceneConfig, designs: np.ndarray, inits: np.ndarray, reference: np.ndarray,
                         delta: float, rng: np.random.Generator, workers: int) -> np.ndarray:
    """``[E, T+1]``: MuJoCo from ``inits`` moved by ``N(0, delta^2)`` per coordinate, against ``reference``."""
    moved = inits + delta * rng.standard_normal(inits.shape)
    return divergence(simulate(cfg, designs, moved, workers=workers), reference)


@torch.no_grad()
def model_error(sim: torch.nn.Module, cfg: SceneConfig, designs: np.ndarray, inits: np.ndarray,
                reference: np.ndarray) -> np.ndarray:
    """``[E, T+1]``: a particle model's open-loop rollout from the layouts at rest, against ``reference``."""
    sim.eval()
    vertices = design_fk(torch.as_tensor(designs), cfg).float()
    pred = sim.rollout(torch.as_tensor(inits, dtype=torch.float32), vertices, reference.shape[1] - 1)
    return divergence(pred.double().numpy(), reference)


def scored_designs(report: dict) -> list[dict]:
    """The designs of a ``bench_design.py`` report that MuJoCo scored: each method's final design and,
    for a refined loop, each round's design (method ``"<method> rounds"``, each design once), with
    target, method, MuJoCo score and, where the learned model predicted that design's score, predicted
    - MuJoCo (a refined loop's result may be a runner-up it did not predict: no gap)."""
    rows = []
    for target, methods in report["runs"].items():
        for method, run in methods.items():
            rounds = run.get("rounds") or []
            if rounds and "design" not in run:  # reports from before the loop recorded its result
                run = {**run, **refined_best(rounds)}
            entries = [(method, run, not rounds)]
            seen = set()
            for r in rounds:
                if tuple(r.get("design", ())) not in seen:
                    seen.add(tuple(r.get("design", ())))
                    entries.append((f"{method} rounds", r, True))
            for name, r, predicted in entries:
                if {"design", "score"} <= set(r):
                    gap = r["predicted_score"] - r["score"] if predicted and r.get("predicted_score") is not None \
                        else None
                    rows.append({"target": float(target), "method": name, "design": r["design"], "score": r["score"],
                                 "gap": gap})
    return rows


def read_design_report(path: str) -> dict:
    """A ``bench_design.py`` report, or a one-line exit saying what is wrong with the file."""
    try:
        report = json.loads(Path(path).read_text())
    except OSError as e:
        raise SystemExit(f"--designs {path}: cannot read it ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SystemExit(f"--designs {path} is not a JSON file ({e})") from None
    if (not isinstance(report, dict) or not {"runs", "protocol"} <= set(report)
            or not {"scene", "seed"} <= set(report["protocol"])):
        raise SystemExit(f"--designs {path} is not a report of scripts/bench_design.py (it lacks runs, or a "
                         "protocol with scene and seed)")
    return report


def score_changes(report: dict, deltas: list[float], repeats: int, workers: int) -> dict:
    """MuJoCo's bin score of :func:`scored_designs` from the problem's layout moved by each delta,
    minus the report's score: ``{"segments", "seed", "designs": rows, "deltas": {delta: [repeats, designs]}}``."""
    scene = SceneConfig.from_dict(report["protocol"]["scene"])
    seed = int(report["protocol"]["seed"])
    rows = scored_designs(report)
    if not rows:
        raise GndesignError("the design report holds no scored design: give reports of scripts/bench_design.py")
    designs = np.stack([np.asarray(r["design"], dtype=np.float64) for r in rows])
    goals = [get_design_goal("bin", scene, target_x=r["target"]) for r in rows]
    layout = initial_positions(scene, seed)

    def scores(moved: np.ndarray) -> np.ndarray:
        final = simulate(scene, designs, np.broadcast_to(moved, (len(rows), *moved.shape)), workers=workers)[:, -1]
        return np.array([g.score(f) for g, f in zip(goals, final, strict=True)])

    recorded = np.array([r["score"] for r in rows])
    if np.abs(scores(layout) - recorded).max() > 1e-9:
        raise GndesignError("MuJoCo does not reproduce the design report's scores from its layout (another "
                            "scene, seed or MuJoCo version): re-run the design benchmark here")
    out = {}
    for delta in deltas:
        rng = np.random.default_rng([seed, int(np.float64(delta).view(np.int64))])
        out[f"{delta:g}"] = [(scores(layout + delta * rng.standard_normal(layout.shape)) - recorded).tolist()
                             for _ in range(repeats)]
    return {"segments": scene.segments, "seed": seed,
            "designs": [{k: r[k] for k in ("target", "method", "score", "gap")} for r in rows], "deltas": out}


def markdown(report: dict) -> str:
    m, p = report["machine"], report["protocol"]
    frames = p["frames"]
    lines = ["# How predictable the obstacle scene is", "",
             f"Machine: {m['cores']} cores, torch {m['torch']}, Python {m['python']}. {p['episodes']} episodes of "
             f"the obstacle scene's dataset with seed {p['seed']} ({p['particles']} balls, {p['frames_total']} "
             f"frames, K = {p['segments']} chains), {report['seconds']:.0f} s.", "",
             "Mean ball distance [m] from MuJoCo's rollout of each episode as drawn: MuJoCo again from the "
             "layout moved by a normal of std delta per coordinate (mean over the draws; the spread of the draws' "
             "means in brackets), and the learned model rolled out open-loop from the layout.", "",
             "| rollout | " + " | ".join(f"frame {f}" for f in frames) + " | mean over frames |",
             "|---|" + "---|" * (len(frames) + 1)]
    for key, row in report["mujoco"].items():
        draws = row["draws"]
        cells = []
        for f in [*frames, "mean"]:
            vals = [d["position_error"][f] if f != "mean" else d["mean_position_error"] for d in draws]
            cells.append(f"{np.mean(vals):.3g} ({min(vals):.3g}-{max(vals):.3g})" if len(vals) > 1
                         else f"{vals[0]:.3g}")
        lines.append(f"| MuJoCo, layout moved by delta = {key} m | " + " | ".join(cells) + " |")
    if report.get("model"):
        r = report["model"]
        lines.append(f"| learned: `{p['model']}` | " + " | ".join(f"{r['position_error'][f]:.3g}" for f in frames)
                     + f" | {r['mean_position_error']:.3g} |")
    if report.get("scores"):
        lines += ["", "Design scores (the fraction of the balls in the bin) of the design reports' final designs (and "
                  "refined rounds'), MuJoCo from the problem's layout moved by delta against the report's MuJoCo "
                  "score: the mean change and the mean absolute change over designs and draws, per method; beside "
                  "them the report's mean absolute predicted - MuJoCo gap where the learned model predicted the "
                  "score.", "",
                  "| design report | K | method | designs | mean score | recorded mean abs gap | "
                  + " | ".join(f"delta = {d:g} m: mean change, mean abs change" for d in p["deltas"]) + " |",
                  "|---|---|---|---|---|---|" + "---|" * len(p["deltas"])]
        for path, r in report["scores"].items():
            methods = [d["method"] for d in r["designs"]]
            for method in dict.fromkeys(methods):
                pick = np.array([m == method for m in methods])
                rows = [d for d, k in zip(r["designs"], pick, strict=True) if k]
                gaps = [abs(d["gap"]) for d in rows if d["gap"] is not None]
                cells = [f"{np.asarray(v)[:, pick].mean():+.3f}, {np.abs(np.asarray(v)[:, pick]).mean():.3f}"
                         for v in r["deltas"].values()]
                lines.append(f"| `{path}` | {r['segments']} | {method} | {len(rows)} | "
                             f"{np.mean([d['score'] for d in rows]):.3f} | "
                             f"{f'{np.mean(gaps):.3f}' if gaps else '-'} | " + " | ".join(cells) + " |")
        lines += ["", "Per target, each method's final design: its score from the problem's layout as drawn -> its "
                  "mean score from the layout moved (over every delta's draws).", ""]
        header = None
        for path, r in report["scores"].items():
            finals = [(i, d) for i, d in enumerate(r["designs"]) if not d["method"].endswith(" rounds")]
            targets = list(dict.fromkeys(d["target"] for _, d in finals))
            if header != targets:
                header = targets
                lines += ["| design report | K | method | " + " | ".join(f"x = {t:g}" for t in targets) + " | mean |",
                          "|---|---|---|" + "---|" * (len(targets) + 1)]
            moved = np.concatenate([np.asarray(v) for v in r["deltas"].values()]).mean(0)  # [designs]
            for method in dict.fromkeys(d["method"] for _, d in finals):
                mine = {d["target"]: (d["score"], d["score"] + moved[i]) for i, d in finals if d["method"] == method}
                cells = [f"{mine[t][0]:.2f} -> {mine[t][1]:.3f}" if t in mine else "-" for t in targets]
                drawn, perturbed = np.mean([v[0] for v in mine.values()]), np.mean([v[1] for v in mine.values()])
                lines.append(f"| `{path}` | {r['segments']} | {method} | " + " | ".join(cells)
                             + f" | {drawn:.3f} -> {perturbed:.3f} |")
    lines += ["", f"MuJoCo repeats itself exactly (largest difference between two runs of every episode: "
              f"{report['repeat_max_difference']:g} m)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="pretrained:obstacle", help="particle model to score beside MuJoCo, or none")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=1, help="the dataset seed the episodes are drawn with")
    p.add_argument("--deltas", type=float, nargs="+", default=[1e-6, 1e-4, 1e-3],
                   help="std [m] of the layout perturbations")
    p.add_argument("--repeats", type=int, default=2, help="perturbation draws per delta")
    p.add_argument("--frames", type=int, nargs="+", default=[10, 50, 100, 150], help="frames to report")
    p.add_argument("--workers", type=int, default=2, help="MuJoCo processes")
    p.add_argument("--designs", nargs="*", default=[], metavar="DESIGN_JSON",
                   help="design.json reports of scripts/bench_design.py whose scores to perturb")
    p.add_argument("--out", default=str(ROOT / "results"))
    args = p.parse_args()
    if args.episodes < 1 or args.repeats < 1 or args.workers < 1:
        raise SystemExit("--episodes, --repeats and --workers must be positive")
    if not all(np.isfinite(d) and d > 0 for d in args.deltas):
        raise SystemExit(f"--deltas must be positive finite lengths in metres, got {args.deltas}")
    cfg = SceneConfig()
    if min(args.frames) < 1 or max(args.frames) > cfg.frames:
        raise SystemExit(f"--frames must lie in 1..{cfg.frames} (the scene's frames), got {args.frames}")
    try:
        out = check_output(args.out, "dir", overwrite=None)
    except GndesignError as e:
        raise SystemExit(str(e)) from None
    reports = {path: read_design_report(path) for path in args.designs}
    torch.set_num_threads(1)
    model = None
    if args.model.lower() != "none":
        from envs.obstacle.problem import load_design_model

        try:
            model = load_design_model(args.model, None, cfg.segments, "chain")
        except GndesignError as e:
            raise SystemExit(f"--model {args.model}: {e}") from None
    start = time.perf_counter()
    setups = [episode_setup(cfg, args.seed, i) for i in range(args.episodes)]
    designs, inits = np.stack([d for d, _ in setups]), np.stack([q for _, q in setups])
    reference = simulate(cfg, designs, inits, workers=args.workers)
    repeat = float(np.abs(simulate(cfg, designs, inits, workers=args.workers) - reference).max())
    frames = sorted(set(args.frames))
    report = {"machine": machine_info(threads_per_job=1),
              "protocol": {"model": args.model, "episodes": args.episodes, "seed": args.seed, "deltas": args.deltas,
                           "repeats": args.repeats, "frames": frames, "frames_total": cfg.frames,
                           "particles": cfg.n_particles, "segments": cfg.segments},
              "repeat_max_difference": repeat, "mujoco": {}}
    for delta in args.deltas:
        draws = []
        for r in range(args.repeats):
            rng = np.random.default_rng([args.seed, r, int(np.float64(delta).view(np.int64))])
            draws.append(summarize_position_errors(
                perturbed_divergence(cfg, designs, inits, reference, delta, rng, args.workers), frames))
            print(f"delta {delta:g}, draw {r}: {draws[-1]}", flush=True)
        report["mujoco"][f"{delta:g}"] = {"delta": delta, "draws": draws}
    report["scores"] = {}
    for path, rep in reports.items():
        try:
            report["scores"][path] = score_changes(rep, args.deltas, args.repeats, args.workers)
        except GndesignError as e:
            raise SystemExit(f"--designs {path}: {e}") from None
        print(f"{path}: {len(report['scores'][path]['designs'])} designs scored", flush=True)
    if model is not None:
        report["model"] = summarize_position_errors(model_error(*model, designs, inits, reference), frames)
        print(f"{args.model}: {report['model']}", flush=True)
    report["seconds"] = time.perf_counter() - start
    check_finite([report["mujoco"], report.get("model"), report["scores"]], "a divergence or model error",
                 "a rollout blew up; check the scene and the model")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "predictability.json", report)
    atomic_write_text(out / "predictability.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
