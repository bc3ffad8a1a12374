"""``gndesign distill``: symbolic distillation of a message-sparse N-body model (:mod:`gndesign.distill`).

Writes into ``out/``: ``distill.json`` (R^2, ranking, formulas with their fronts, the recovered
force law against the true one, rollout errors of the network and of its symbolic model),
``formulas.md`` (sympy text and LaTeX) and ``messages.png`` (top components against the true force,
and the accuracy/complexity fronts).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from gndesign.checkpoints import load_model
from gndesign.datasets.nbody import NBodyDataset
from gndesign.distill import (
    check_distillable,
    distill_messages,
    linear_node,
    record_messages,
    rollout_error,
    symbolic_model,
)
from gndesign.io import atomic_write_json, atomic_write_text, check_finite
from gndesign.plotting import pyplot, save_figure
from gndesign.symbolic import require_backend

READOUT_HINT_R2 = 0.95  # below this R^2, a model with the acceleration readout gets the hint to retrain


def load_pair(model_spec: str, data: str | os.PathLike):
    """The N-body model and dataset, checked to fit each other and to be distillable."""
    model, blob = load_model(model_spec, "nbody")
    ds = NBodyDataset.load(data)
    check_distillable(model, ds, f"checkpoint {model_spec}")
    return model, blob, ds


def held_out(blob: dict[str, Any], ds: NBodyDataset) -> np.ndarray:
    """The validation episodes of the model's run when it trained on ``ds``, else all episodes."""
    cfg = blob["config"]
    trained_on = [str(Path(p).resolve()) for p in cfg.get("data") or []]
    if str(Path(ds.path).resolve()) in trained_on:
        tc = cfg["train"]
        val = ds.split(float(tc["val_fraction"]), int(tc["seed"]))[1]
        if len(val):
            return val
    return np.arange(len(ds))


def run_distill(model_spec: str, data: str | os.PathLike, out: str | os.PathLike, backend: str = "sindy",
                seed: int = 0, horizon: int = 50, ood_data: str | os.PathLike | None = None) -> dict[str, Any]:
    """Distill the model ``model_spec`` on (held-out episodes of) dataset ``data`` into ``out``."""
    require_backend(backend)
    model, blob, ds = load_pair(model_spec, data)
    episodes = held_out(blob, ds)
    rec = record_messages(model, ds, episodes, seed=seed)
    result = distill_messages(rec, ds.law, ds.dim, backend, seed, float(ds.system.get("damping", 0.5)))
    fill = rec["msg"].mean(0)
    node = linear_node(rec)
    check_finite(node, "the linear fit of the node function", "the model's node outputs are not finite on this data")
    sym = symbolic_model(model, [(f["component"], f["expr"]) for f in result["formulas"]], fill, node)
    if node is not None:
        result["node"] = {"linear_r2": node["r2"], "W": node["W"].tolist(), "c": node["c"].tolist()}
    evals = {"in_distribution": (ds, episodes)}
    if ood_data is not None:
        ood = NBodyDataset.load(ood_data, expected_system=ds.system)
        evals["out_of_distribution"] = (ood, np.arange(len(ood)))
    result["rollouts"] = {name: {"horizon": min(horizon, d.steps), "episodes": len(ep),
                                 "gn_mse": rollout_error(model, d, ep, horizon),
                                 "symbolic_mse": rollout_error(sym, d, ep, horizon)}
                          for name, (d, ep) in evals.items()}
    result.update(model=str(model_spec), data=str(data), system=ds.system["name"], backend=backend,
                  message=model.config.message, readout=model.config.readout, pairs=len(rec["feats"]))
    if result["r2"] < READOUT_HINT_R2 and model.config.readout == "acceleration":
        result["hint"] = ("the messages are not a linear transform of the pair forces: the node model sees the "
                          "receiver's mass and charge, so a message may carry F/m_i instead of F; retrain with "
                          "--set model.readout=force (Newton's second law built in)")
    exprs = [f.pop("expr") for f in result["formulas"]]
    check_finite([f["mse"] for f in result["formulas"]], "the formulas' errors")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "distill.json", result)
    atomic_write_text(out / "formulas.md", formulas_markdown(result))
    plot_messages(rec, result, exprs, out / "messages.png")
    return result


def formulas_markdown(result: dict[str, Any]) -> str:
    lines = [f"# {result['system']}: {result['message']} messages, {result['readout']} readout, backend "
             f"{result['backend']}", "", f"R^2 of the true forces on the top components: {result['r2']:.4f}", ""]
    if "hint" in result:
        lines += [f"Note: {result['hint']}.", ""]
    for f in result["formulas"]:
        lines += [f"## message component {f['component']} (R^2 {f['r2']:.4f}, complexity {f['complexity']})", "",
                  f"    {f['formula']}", "", f"$$ {f['latex']} $$", ""]
    lines += ["## implied force law (through the linear fit)", ""]
    for entry in result["force_law"]:
        lines += [f"- F_{entry['component']} = {entry['recovered']}", f"  (true: {entry['true']}; form "
                  f"{'correct' if entry['form_correct'] else 'WRONG'}, constant error {entry['constant_error']})"]
    if "node" in result:
        n = result["node"]
        lines += ["", f"## node function: net force = W (sum of messages) + c (linear fit R^2 {n['linear_r2']:.5f})",
                  "", f"    W = {np.round(n['W'], 6).tolist()}, c = {np.round(n['c'], 6).tolist()}"]
    return "\n".join(lines) + "\n"


def plot_messages(rec: dict[str, Any], result: dict[str, Any], exprs, path: Path) -> None:
    plt = pyplot()
    k = len(result["formulas"])
    fig, axes = plt.subplots(2, k, figsize=(4 * k, 7), squeeze=False)
    A = np.asarray
    for i, f in enumerate(result["formulas"]):
        comp = f["component"]
        # The true force projected on the direction the linear fit finds for this component.
        proj = rec["force"] @ np.linalg.lstsq(rec["force"], rec["msg"][:, comp] - rec["msg"][:, comp].mean(),
                                              rcond=None)[0]
        ax = axes[0, i]
        ax.scatter(proj, rec["msg"][:, comp] - rec["msg"][:, comp].mean(), s=2, alpha=0.4)
        ax.set(title=f"component {comp}", xlabel="linear map of the true force", ylabel="message (centred)")
        front = f["front"]
        ax = axes[1, i]
        ax.semilogy([c["complexity"] for c in front], A([c["mse"] for c in front]) + 1e-300, "o-")
        ax.axvline(f["complexity"], color="r", ls="--")
        ax.set(xlabel="complexity", ylabel="mean squared error", title="front (red: selected)")
    fig.suptitle(f"{result['system']} ({result['message']}): R^2 {result['r2']:.3f}")
    fig.tight_layout()
    save_figure(fig, path)

