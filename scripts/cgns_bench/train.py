"""The benchmark's training jobs: the forward GN simulator and the C-GNS of each system on the same
data, options and seed, for the same wall-clock budget (one thread each), then the forward model
again for as many optimizer steps as the C-GNS made."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .protocol import CARTPOLE_OPTIONS, COMMON, PARTICLE_OPTIONS, SOLVER


def training_jobs(systems: list[str], data: dict, work: Path, minutes: float, particle_minutes: float) -> list[dict]:
    """Each system's forward model and C-GNS, on the same training data and options, for the same time."""
    jobs = []
    for system in systems:
        opts = PARTICLE_OPTIONS if system == "particles" else CARTPOLE_OPTIONS
        budget = particle_minutes if system == "particles" else minutes
        for model in ("forward", "cgns"):
            jobs.append({"name": f"{system}-{model}", "system": system, "model": model, "minutes": budget,
                         "run": str(work / f"{system}-{model}"), "data": [data[system]["train"]], "options": opts})
    return jobs


def equal_steps_jobs(jobs: list[dict], training: dict) -> list[dict]:
    """The forward models again, for as many optimizer steps as their system's C-GNS made in its time."""
    return [{**job, "name": f"{job['name']}-steps", "minutes": None, "run": f"{job['run']}-steps",
             "steps": int(training[f"{job['system']}-cgns"]["summary"]["step"])}
            for job in jobs if job["model"] == "forward"]


def train_job(job: dict) -> dict:
    """Train one model (a worker process, one thread); its ``done.json`` marks it finished."""
    import torch

    from gndesign.config import as_particle_config, load_config
    from gndesign.io import atomic_write_json
    from gndesign.training import train

    torch.set_num_threads(1)
    run = Path(job["run"])
    done = run / "done.json"
    if done.exists():
        finished = json.loads(done.read_text())
        if finished.get("steps") == job.get("steps"):
            return finished
    if run.exists():  # interrupted (a resumed wall-clock budget would restart its clock), or another step budget
        shutil.rmtree(run)
    if job.get("steps"):  # a budget of optimizer steps (the learning rate decays over them), not of time
        overrides = job["options"] + COMMON + [f"train.steps={job['steps']}"]
    else:
        overrides = job["options"] + COMMON + [f"train.minutes={job['minutes']}"]
    t0 = time.time()
    if job["model"] == "cgns":
        cfg = load_config(None, overrides + SOLVER, data=job["data"], cgns=True)
    elif job["system"] == "particles":
        cfg = as_particle_config(load_config(None, overrides, data=job["data"]))
    else:
        cfg = load_config(None, overrides, data=job["data"])
    summary = train(cfg, run, progress=False)
    out = {"name": job["name"], "system": job["system"], "model": job["model"], "minutes": job["minutes"],
           "steps": job.get("steps"), "wall_seconds": time.time() - t0, "summary": summary, "config": cfg.to_dict(),
           "checkpoint": str(run / "checkpoints" / "latest.pt")}
    atomic_write_json(done, out)
    return out
