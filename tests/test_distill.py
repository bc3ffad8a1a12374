"""Symbolic distillation (issue 18 item 3): planted laws, the symbolic model, bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
import sympy
import torch

from envs.generate import generate_dataset
from gndesign.checkpoints import load_model
from gndesign.distill import distill_messages, linear_node, rank_components, record_messages, symbolic_model
from gndesign.errors import GndesignError
from gndesign.nbody_laws import law_forces, pair_inputs
from gndesign.nbody_model import pair_feature_names
from gndesign.symbolic import Candidate, evaluate, pareto, parse_formula, require_backend, select, select_joint
from workflows.cli import main
from workflows.distill import READOUT_HINT_R2, run_distill
from workflows.train import train_model


def planted(law: str, dim: int, n_frames: int = 150, seed: int = 0) -> dict:
    """Recorded-messages dict whose top components are an exact linear transform of ``law``'s forces."""
    rng = np.random.default_rng(seed)
    x, v = rng.normal(size=(n_frames, 4, dim)), rng.normal(size=(n_frames, 4, dim))
    m, q = np.exp(rng.uniform(-1, 1, (n_frames, 4))), rng.choice([-1.0, 1.0], (n_frames, 4))
    p = pair_inputs(x, v, m, q)
    mask = p["mask"]
    feats = np.concatenate([p["d"][:, mask], p["r"][:, mask][..., None], p["w"][:, mask],
                            *[p[k][:, mask][..., None] for k in ("m1", "m2", "q1", "q2")]], -1).reshape(-1, 2 * dim + 5)
    force = law_forces(law, p)[:, mask].reshape(-1, dim)
    keep = feats[:, dim] > 0.4  # no near-singular pairs
    feats, force = feats[keep], force[keep]
    A = rng.normal(size=(dim, dim)) + 2 * np.eye(dim)
    msg = np.concatenate([force @ A + 0.3, 1e-3 * rng.normal(size=(len(force), 5))], axis=1)[:, ::-1].copy()
    return {"feats": feats, "msg": msg, "logvar": None, "force": force, "names": pair_feature_names(dim)}


@pytest.mark.parametrize("law,dim,tolerance", [("r2", 2, 1e-3), ("charge", 3, 1e-3), ("spring", 2, 1e-3),
                                               ("disc", 2, 0.02)])
def test_recovers_planted_law(law, dim, tolerance):
    """Exact laws, and the discontinuous one: its step is placed between neighbouring distances, so its
    distance is off by at most their spacing (2% here)."""
    rec = planted(law, dim)
    out = distill_messages(rec, law, dim, "sindy", fit_pairs=1500)
    assert out["r2"] > 0.999999
    assert set(out["ranking"][:dim]) == set(range(5, 5 + dim))  # the planted components rank first
    assert out["form_correct"], out["force_law"]
    assert out["constant_error"] < tolerance
    if law == "disc":
        assert "Heaviside" in out["force_law"][0]["recovered"]


def test_kl_ranking_uses_the_divergence():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(500, 3)) * [0.1, 2.0, 0.1]
    logvar = np.stack([np.full(500, -4.0), np.zeros(500), np.zeros(500)], 1)  # component 0: tight, informative
    order, score = rank_components(mu, logvar)
    assert list(order) == [1, 0, 2] and score[0] > score[2] + 1.0  # equal variances, the KL tells them apart
    assert list(rank_components(mu)[0][:1]) == [1]


def test_joint_selection_picks_one_support_for_all_components():
    """Column A gains 2.5x from an artefact term (support 2), column B is mostly one term (support 0):
    chosen one at a time they disagree (A keeps the artefact); chosen jointly both take support 1."""
    a, b, c = sympy.symbols("a b c")
    exprs, sizes = [a, a + b, a + b + c], [8, 17, 26]

    def column(errors):
        return [Candidate(e, k, m) for e, k, m in zip(exprs, sizes, errors, strict=True)]

    A, B = [0.5, 0.010, 0.004], [0.002, 0.0011, 0.0010]
    assert select(pareto(column(A))).expr == a + b + c and select(pareto(column(B))).expr == a + b
    fronts, best = select_joint([column(A), column(B)], np.array([1.0, 0.01]))
    assert [f.expr for f in best] == [a + b, a + b]
    assert [f.mse for f in best] == [0.010, 0.0011]  # each column's own fit of the chosen support
    # the joint front's scores: the largest drop of log mean relative error per unit of summed complexity
    assert fronts[0][1].score == pytest.approx(-np.log(0.06 / 0.35) / 18)
    assert fronts[0][1].score == fronts[1][1].score


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    data = generate_dataset("nbody-r2-2d", episodes=6, steps=5, seed=0, out_dir=root / "data", progress=False)
    runs = {}
    for message in ("bottleneck", "standard"):
        run = root / message
        train_model(str(run), [os.fspath(data)], overrides=["model.kind=nbody", f"model.message={message}",
                    "model.hidden_size=16", "model.mlp_layers=1", "model.message_size=4", "train.threads=1"],
                    steps=3, progress=False)
        runs[message] = run / "checkpoints" / "latest.pt"
    other = generate_dataset("nbody-spring-2d", episodes=2, steps=3, seed=0, out_dir=root / "other", progress=False)
    return root, data, runs, other


def test_symbolic_model_equals_the_formula(trained):
    _, _, runs, _ = trained
    model, _ = load_model(runs["bottleneck"], "nbody")
    names = pair_feature_names(2)
    f0 = parse_formula("-0.7*m1*m2*dx/r**3 + 0.2", names)
    f1 = parse_formula("q1*q2*dy/r**3", names)
    sym = symbolic_model(model, [(0, f0), (1, f1)], np.zeros(2))
    x, v = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    m, q = torch.rand(3, 4) + 0.5, torch.tensor([1.0, -1.0, 1.0, -1.0]).expand(3, 4)
    acc, (msg, _, mask) = sym(x, v, m, q, return_messages=True)
    from gndesign.nbody_model import pair_features

    feats, _ = pair_features(x, v, m, q)
    flat = feats[mask.expand(3, -1, -1)].double().numpy()
    np.testing.assert_allclose(msg[mask.expand(3, -1, -1)][:, 0].numpy(), evaluate(f0, names, flat), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(msg[mask.expand(3, -1, -1)][:, 1].numpy(), evaluate(f1, names, flat), rtol=1e-4,
                               atol=1e-5)
    # the output is the learned node model applied to the summed formula messages
    agg = (msg * mask[..., None]).sum(-2)
    expected = model.node(torch.cat([m[..., None], q[..., None], agg], -1)) * model.acc_scale
    torch.testing.assert_close(acc, expected)


def test_linear_node_of_a_force_readout_model(trained):
    """With model.readout=force the node function is distilled as a linear map of the summed
    messages: exact when it is linear (no hidden layer), and then the fully symbolic model (formula
    edges, linear node) gives F / m with F = W sum + c."""
    from gndesign.config import NBodyModelConfig
    from gndesign.datasets.nbody import NBodyDataset
    from gndesign.nbody_model import NBodyGN

    _, data, _, _ = trained
    ds = NBodyDataset.load(data)
    torch.manual_seed(0)
    model = NBodyGN(NBodyModelConfig(message="bottleneck", readout="force", hidden_size=8, mlp_layers=1), ds.system)
    model.node = torch.nn.Linear(2, 2)  # a node function that is exactly linear
    rec = record_messages(model, ds, [0, 1])
    assert rec["agg"].shape == (2 * (ds.steps + 1) * 4, 2) and rec["node"].shape == rec["agg"].shape
    node = linear_node(rec)
    assert node["r2"] > 1 - 1e-9
    np.testing.assert_allclose(node["W"], model.node.weight.detach().double().numpy().T, atol=1e-5)
    np.testing.assert_allclose(node["c"], model.node.bias.detach().double().numpy(), atol=1e-5)
    names = pair_feature_names(2)
    f = [(0, parse_formula("m1*m2*dx/r**3", names)), (1, parse_formula("q1*q2*dy/r**2 + 0.1", names))]
    sym = symbolic_model(model, f, np.zeros(2), {"W": np.eye(2) * 2.0, "c": np.array([0.5, -0.5])})
    x, v = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    m, q = torch.rand(3, 4) + 0.5, torch.tensor([1.0, -1.0, 1.0, -1.0]).expand(3, 4)
    acc, (msg, _, mask) = sym(x, v, m, q, return_messages=True)
    force = 2.0 * (msg * mask[..., None]).sum(-2) + torch.tensor([0.5, -0.5])
    torch.testing.assert_close(acc, force * model.acc_scale / m[..., None])
    model.config.readout = "acceleration"
    assert linear_node(record_messages(model, ds, [0])) is None  # its node function also sees m_i, q_i


def test_distill_end_to_end(trained, tmp_path):
    _, data, runs, _ = trained
    out = run_distill(str(runs["bottleneck"]), data, tmp_path / "d", horizon=3)
    assert 0.0 <= out["r2"] <= 1.0 and len(out["formulas"]) == 2
    assert {p.name for p in (tmp_path / "d").iterdir()} == {"distill.json", "formulas.md", "messages.png"}
    assert np.isfinite(out["rollouts"]["in_distribution"]["gn_mse"])
    # a poorly aligned model (3 training steps) with the acceleration readout is told how to retrain
    assert out["readout"] == "acceleration" and out["r2"] < READOUT_HINT_R2
    assert "model.readout=force" in out["hint"]
    assert "model.readout=force" in (tmp_path / "d" / "formulas.md").read_text()


def test_bad_input(trained, tmp_path, capsys):
    _, data, runs, other = trained
    with pytest.raises(GndesignError, match="without message sparsity.*model.message=l1"):
        run_distill(str(runs["standard"]), data, tmp_path / "a")
    with pytest.raises(GndesignError, match="another N-body system"):
        run_distill(str(runs["bottleneck"]), other, tmp_path / "b")
    with pytest.raises(GndesignError, match="pip install pysr"):
        require_backend("pysr") if not _usable("pysr") else (_ for _ in ()).throw(GndesignError("pip install pysr"))
    with pytest.raises(GndesignError, match="does not parse"):
        parse_formula("m1 * (dx +", pair_feature_names(2))
    with pytest.raises(GndesignError, match="unknown symbols"):
        parse_formula("m3 * dx", pair_feature_names(2))
    with pytest.raises(GndesignError, match="non-finite"):
        evaluate(sympy.sympify("1/(r - r)"), ["r"], np.ones((4, 1)))
    with pytest.raises(GndesignError, match="non-finite values on 1 of 3"):
        evaluate(parse_formula("dx/(r - 1)", ["dx", "r"]), ["dx", "r"], np.array([[1.0, 2.0], [1.0, 1.0], [0.0, 3.0]]))
    assert main(["distill", "--model", str(runs["standard"]), "--data", str(data), "--out", str(tmp_path / "c")]) == 2
    assert "gndesign: error:" in capsys.readouterr().err


def _usable(name: str) -> bool:
    try:
        require_backend(name)
        return True
    except GndesignError:
        return False
