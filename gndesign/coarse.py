"""Coarse model steps: a learned model that steps ``k`` control steps at once.

With action repeat (dm_control's habit) the action is held for ``k`` control steps, so a
``k``-step model is an ordinary model of the system whose control timestep is ``k`` times
longer, trained on data generated with held actions and every ``k``-th state recorded
(``gndesign generate --action-repeat k``). ``k`` travels from the data's meta into the model's
:class:`~gndesign.simulator.SystemSpec` (``action_repeat``) and so into the checkpoint. Users keep
counting in control steps: a planner's horizon and replanning interval, an episode's length,
must be multiples of ``k``; these checks are the one home of those rules.
"""

from __future__ import annotations

from gndesign.errors import ConfigError, GndesignError


def model_action_repeat(model, system: str | None = None) -> int:
    """Control steps per model step of ``model`` (a ForwardModel) for ``system`` (None: its only
    system). A system the model was not trained on (zero-shot) takes the trained systems' ``k``
    when they agree, else 1."""
    specs = model.systems
    if system is None and len(specs) == 1:
        system = next(iter(specs))
    if system in specs and system in getattr(model, "trained_systems", specs):
        return int(specs[system].action_repeat)
    trained = {int(specs[s].action_repeat) for s in getattr(model, "trained_systems", specs) if s in specs}
    return trained.pop() if len(trained) == 1 else 1


def check_same_repeat(model_k: int, wanted_k: int, what: str, fix: str) -> None:
    """Refuse a model that steps ``model_k`` control steps where ``what`` (e.g. "the dataset D has
    action repeat") needs ``wanted_k``."""
    if int(model_k) != int(wanted_k):
        raise GndesignError(f"the model steps {model_k} control step(s) at once (action repeat {model_k}) but "
                            f"{what} {wanted_k}: {fix}")


def check_divides(k: int, steps: int, what: str) -> int:
    """``steps // k``, refusing ``steps`` (in control steps) that is not a multiple of ``k``."""
    if steps % k:
        lower = steps // k * k
        raise ConfigError(f"{what} ({steps} control steps) is not a multiple of the action repeat {k}: "
                          f"use {lower or k} or {lower + k}")
    return steps // k
