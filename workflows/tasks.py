"""Tasks as data at the application level: list the shipped task files, show one, check one."""

from __future__ import annotations

from envs.task_files import find_task, load_task_file, shipped_tasks, task_yaml
from envs.tasks import get_task, list_tasks
from gndesign.errors import GndesignError


def task_listing() -> list[dict]:
    """The shipped tasks: ``{name, description, file}`` each."""
    files = shipped_tasks()
    return [{"name": name, "description": text, "file": str(files[name])} for name, text in list_tasks().items()]


def show_task(name: str) -> str:
    """The YAML text of a shipped task (``swimmer6`` instantiates ``swimmerN``) or of a task file,
    normalized (the form :func:`envs.task_files.save_task_file` writes)."""
    if name.endswith((".yaml", ".yml")):
        return task_yaml(load_task_file(name))
    spec = find_task("cartpole-swingup" if name == "cartpole" else name)
    if spec is None:
        raise GndesignError(f"no shipped task {name!r}: choose one of {', '.join(shipped_tasks())} "
                            "(swimmerN: e.g. swimmer6), or give a task file")
    return task_yaml(spec)


def check_task(path: str, system: str | None = None) -> dict:
    """Load the task file ``path`` and bind it to its system (or ``system``): every name checked.
    Returns a summary: name, system, quantities, parameters, episode steps, control timestep."""
    task = get_task(path, system)
    return {"name": task.name, "system": task.system.name, "quantities": list(task.spec.quantities),
            "parameters": list(task.spec.parameters), "episode_steps": task.episode_steps,
            "control_timestep": task.system.control_timestep, "judge": "dm_control" if task.domain else "mujoco"}
