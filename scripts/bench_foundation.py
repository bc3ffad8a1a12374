"""Foundation benchmarks: torch FK vs MuJoCo for every system, dataset generation rate.

Writes ``results/foundation.json`` and ``results/foundation.md``.

    python scripts/bench_foundation.py [--states 256] [--episodes 256]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import mujoco
import torch

from envs.generate import generate_dataset
from envs.systems import get_system
from gndesign.fkcheck import check_forward_kinematics
from gndesign.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
FK_SYSTEMS = ["pendulum", "cartpole", "acrobot", "swimmer3", "swimmer6", "swimmer14", "cheetah"]
ALL_JOINTS = """
<mujoco><worldbody>
  <body pos="0.1 0.2 1"><freejoint/><geom size=".1" mass="1"/>
    <body pos="0.3 0 0" quat="0.9 0.1 0.2 0.3"><joint type="ball" pos="0.05 0 0"/><geom size=".1" mass="2"/>
      <body pos="0 0.2 0.1"><joint type="hinge" axis="0 1 1" pos="0.1 0 0.02"/><joint type="slide" axis="1 0 0"/>
        <geom size=".1" mass="1"/><body pos="0 0 0.2"><geom size=".1" mass="0.5"/></body>
      </body></body></body></worldbody></mujoco>"""
GEN_SYSTEMS = ["cartpole", "swimmer6", "cheetah"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--states", type=int, default=256)
    p.add_argument("--episodes", type=int, default=256)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", default=str(ROOT / "results" / "foundation.json"))
    args = p.parse_args()

    fk = {}
    for name in FK_SYSTEMS:
        fk[name] = check_forward_kinematics(get_system(name).model, num_states=args.states, seed=0)
    fk["free+ball+hinge+slide (MJCF)"] = check_forward_kinematics(
        mujoco.MjModel.from_xml_string(ALL_JOINTS), num_states=args.states, seed=0)

    gen = {}
    for name in GEN_SYSTEMS:
        gen[name] = {}
        for workers in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                rep = generate_dataset(name, episodes=args.episodes, steps=args.steps, seed=0,
                                       out_dir=Path(tmp) / "d", workers=workers, progress=False)
                gen[name][f"workers_{workers}"] = {"transitions": rep.transitions,
                                                   "seconds": time.perf_counter() - t,
                                                   "transitions_per_s": rep.transitions / (time.perf_counter() - t)}
    result = {"machine": {"cores": os.cpu_count(), "torch": torch.__version__, "mujoco": mujoco.__version__,
                          "python": platform.python_version()},
              "fk_states": args.states, "fk": fk, "generation": gen,
              "generation_settings": {"episodes": args.episodes, "steps": args.steps}}
    atomic_write_json(args.out, result)
    lines = [f"Machine: {os.cpu_count()} cores, torch {torch.__version__}, mujoco {mujoco.__version__}.", "",
             f"Torch FK vs MuJoCo, max abs error over {args.states} random states (float64):", "",
             "| system | position | rotation | lin. vel | ang. vel | COM vel | integrate | max |",
             "|---|---|---|---|---|---|---|---|"]
    for name, e in fk.items():
        lines.append(f"| {name} | {e['position']:.1e} | {e['rotation']:.1e} | {e['linear_velocity']:.1e} | "
                     f"{e['angular_velocity']:.1e} | {e['com_velocity']:.1e} | {e['integrate']:.1e} | {e['max']:.1e} |")
    lines += ["", f"Dataset generation ({args.episodes} episodes x {args.steps} steps, transitions/s):", "",
              "| system | 1 worker | 2 workers |", "|---|---|---|"]
    for name, g in gen.items():
        rates = [g[f"workers_{w}"]["transitions_per_s"] for w in (1, 2)]
        lines.append(f"| {name} | {rates[0]:.0f} | {rates[1]:.0f} |")
    atomic_write_text(Path(args.out).with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
