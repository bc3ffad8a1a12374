"""Training throughput on a device (``train.device``): optimizer steps per second of the benchmark's
recipes (``scripts/bench_forward.py``: the GN and the MLP, with their per-system options) at several
batch sizes, through the real training loop (:func:`gndesign.training.run_training`: sampling and
input noise on the CPU, the batch moved to the device, forward, backward, clipping, Adam, the weights'
average).

Writes ``results/train_device[_TAG].json`` and ``.md`` with the machine (cores, torch version, GPU).

    python scripts/bench_train_device.py --data runs/bench_forward/data/acrobot-1000x200-s0 --device cuda
    python scripts/bench_train_device.py --data DIR --device cpu --threads 1 --batches 64 256 --tag cpu

Each cell trains ``--warmup`` steps (first kernels, allocator, caches), then ``--steps`` timed steps;
the rate is taken between the two logged rows (statistics, validation and checkpoints excluded).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_forward import GN_SYSTEM, MODEL  # noqa: E402

from gndesign.config import load_config  # noqa: E402
from gndesign.datasets.trajectories import TrajectoryDataset  # noqa: E402
from gndesign.errors import ConfigError, GndesignError, writing  # noqa: E402
from gndesign.io import atomic_write_json, atomic_write_text, machine_info  # noqa: E402
from gndesign.training import make_trainer, resolve_device, run_training  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def recipe(kind: str, system: str, batch: int) -> list[str]:
    """The benchmark's options for ``kind`` on ``system`` with its batch size replaced by ``batch``."""
    opts = MODEL[kind] + (GN_SYSTEM.get(system, []) if kind == "gn" else [])
    return [o for o in opts if not o.startswith("train.batch_size=")] + [f"train.batch_size={batch}"]


def measure(data: Path, kind: str, batch: int, device: str, warmup: int, steps: int, threads: int | None) -> dict:
    system = TrajectoryDataset.load(data).system
    extra = [f"train.device={device}", f"train.steps={warmup + steps}", f"train.log_every={warmup}",
             f"train.eval_every={warmup + steps}", f"train.checkpoint_every={warmup + steps}",
             "train.stats_transitions=4096"] + ([f"train.threads={threads}"] if threads else [])
    cfg = load_config(None, recipe(kind, system, batch) + extra, data=[data])
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_training(make_trainer(cfg), Path(tmp) / "run", progress=False)
        with open(Path(tmp) / "run" / "metrics.csv", newline="") as f:
            times = {int(r["step"]): float(r["time_s"]) for r in csv.DictReader(f)}
    seconds = times[warmup + steps] - times[warmup]
    return {"system": system, "kind": kind, "batch_size": batch, "device": summary["device"], "steps": steps,
            "seconds": seconds, "steps_per_s": steps / seconds, "transitions_per_s": steps * batch / seconds,
            "final_train_loss": summary["train_loss"]}


def markdown(rows: list[dict], machine: dict) -> str:
    lines = [f"Training throughput (`scripts/bench_train_device.py`), machine: {machine}", "",
             "| system | model | batch | device | steps/s | transitions/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['system']} | {r['kind']} | {r['batch_size']} | {r['device']} | {r['steps_per_s']:.1f} | "
              f"{r['transitions_per_s']:,.0f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", required=True, type=Path, help="trajectory datasets (one system each)")
    ap.add_argument("--device", default="auto", help="train.device: cpu, cuda, cuda:N or auto")
    ap.add_argument("--kinds", nargs="+", default=["gn", "mlp"], choices=sorted(MODEL))
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 256, 1024, 4096])
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--steps", type=int, default=200, help="timed steps (a multiple of --warmup)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--tag", default=None, help="results/train_device_TAG.{json,md}")
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    args = ap.parse_args(argv)
    try:
        if args.warmup <= 0 or args.steps <= 0 or args.steps % args.warmup:
            raise ConfigError(f"--steps ({args.steps}) must be a positive multiple of --warmup ({args.warmup})")
        if any(b <= 0 for b in args.batches):
            raise ConfigError(f"--batches must be positive, got {args.batches}")
        device = resolve_device(args.device)  # a GPU torch cannot see: refused before any training
        for d in args.data:
            TrajectoryDataset.load(d)
        if args.tag is not None and not args.tag.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"--tag {args.tag!r}: use letters, digits, '-' and '_' only")
        stem = "train_device" + (f"_{args.tag}" if args.tag else "")
        json_path, md_path = args.out / f"{stem}.json", args.out / f"{stem}.md"
        for path in (json_path, md_path):
            if path.exists() and not path.is_file():
                raise GndesignError(f"{path} exists and is not a file: choose another --out or --tag")
        with writing(args.out):  # an --out that cannot be a directory is refused before any training
            args.out.mkdir(parents=True, exist_ok=True)
        rows = []
        for d in args.data:
            for kind in args.kinds:
                for batch in args.batches:
                    # (a non-finite loss stops the training loop itself with a one-line error)
                    row = measure(d, kind, batch, str(device), args.warmup, args.steps, args.threads)
                    print(f"{row['system']} {kind} batch {batch} on {row['device']}: {row['steps_per_s']:.1f} steps/s, "
                          f"{row['transitions_per_s']:,.0f} transitions/s", flush=True)
                    rows.append(row)
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
        machine = machine_info(device=str(device), gpu=gpu, threads=torch.get_num_threads())
        atomic_write_json(json_path, {"machine": machine, "command": " ".join(sys.argv), "rows": rows})
        atomic_write_text(md_path, markdown(rows, machine))
    except GndesignError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
