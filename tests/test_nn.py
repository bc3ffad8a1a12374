"""Tests of the learnable core: GN blocks and encode-process-decode."""

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from gndesign.nn import (
    EdgeBlock,
    EncodeProcessDecode,
    GlobalBlock,
    Graph,
    GraphNetwork,
    NodeBlock,
    aggregate,
    build_mlp,
)

NODE, EDGE, GLOBAL = 5, 4, 3


def random_graph(num_nodes: int, num_edges: int, isolated: int = 0, gen: torch.Generator | None = None,
                 dtype=torch.float64):
    """Features and topology of one random graph; its last ``isolated`` nodes have no edges."""
    connected = num_nodes - isolated
    ei = torch.randint(0, connected, (2, num_edges), generator=gen)
    return (torch.randn(num_nodes, NODE, generator=gen, dtype=dtype),
            torch.randn(num_edges, EDGE, generator=gen, dtype=dtype),
            torch.randn(1, GLOBAL, generator=gen, dtype=dtype), ei)


def batch_graphs(graphs) -> Graph:
    """Graphs packed one after another."""
    xs, es, us, eis, bs = [], [], [], [], []
    offset = 0
    for g, (x, e, u, ei) in enumerate(graphs):
        xs.append(x), es.append(e), us.append(u), eis.append(ei + offset)
        bs.append(torch.full((x.shape[0],), g, dtype=torch.long))
        offset += x.shape[0]
    return Graph(torch.cat(xs), torch.cat(es), torch.cat(us), torch.cat(eis, 1), torch.cat(bs), len(graphs))


def two_graphs():
    gen = torch.Generator().manual_seed(1)
    return batch_graphs([random_graph(6, 11, isolated=1, gen=gen), random_graph(4, 5, gen=gen)])


def model(**kw) -> EncodeProcessDecode:
    cfg = dict(latent_size=16, mlp_hidden_size=16, mlp_layers=2, message_passing_steps=2, node_out=2,
               edge_out=3, global_out=2)
    cfg.update(kw)
    return EncodeProcessDecode(NODE, EDGE, GLOBAL, **cfg).double()


# ---------------------------------------------------------------------------------------- pieces
def test_build_mlp_structure():
    with_ln = build_mlp(3, 8, 5, num_hidden_layers=2, layer_norm=True, activation=nn.ReLU)
    linears = [m for m in with_ln if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 8), (8, 8), (8, 5)]
    assert isinstance(with_ln[-1], nn.LayerNorm)
    assert sum(isinstance(m, nn.ReLU) for m in with_ln) == 2
    without_ln = build_mlp(3, 8, 5, num_hidden_layers=1, layer_norm=False)
    assert isinstance(without_ln[-1], nn.Linear) and len(without_ln) == 3
    assert without_ln(torch.randn(7, 3)).shape == (7, 5)


def test_aggregate_matches_loops_and_zero_for_empty_segments():
    src = torch.randn(9, 4, dtype=torch.float64)
    index = torch.tensor([0, 2, 2, 0, 4, 2, 0, 4, 4])  # segments 1 and 3 are empty
    for reduce, fn in [("sum", lambda r: r.sum(0)), ("mean", lambda r: r.mean(0)),
                       ("max", lambda r: r.max(0).values)]:
        out = aggregate(src, index, 5, reduce)
        assert out.shape == (5, 4)
        for s in range(5):
            rows = src[index == s]
            expected = fn(rows) if len(rows) else torch.zeros(4, dtype=src.dtype)
            torch.testing.assert_close(out[s], expected)
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(src, index, 5, "median")


# --------------------------------------------------------------- GN block = composition of parts
@pytest.mark.parametrize("aggregation", ["sum", "mean", "max"])
@pytest.mark.parametrize("residual", [False, True])
def test_graph_network_equals_manual_composition(aggregation, residual):
    _, _, _, ei, batch, _ = two_graphs()
    # A residual block keeps sizes; otherwise every size differs so that mix-ups fail.
    in_n, in_e, in_g = (6, 6, 6) if residual else (NODE, EDGE, GLOBAL)
    Fn, Fe, Fg = (6, 6, 6) if residual else (7, 8, 9)
    x = torch.randn(batch.shape[0], in_n, dtype=torch.float64)
    e = torch.randn(ei.shape[1], in_e, dtype=torch.float64)
    u = torch.randn(2, in_g, dtype=torch.float64)
    gn = GraphNetwork(EdgeBlock(in_e, in_n, in_g, Fe, hidden_size=8),
                      NodeBlock(in_n, Fe, in_g, Fn, hidden_size=8, aggregation=aggregation),
                      GlobalBlock(in_g, Fe, Fn, Fg, hidden_size=8, aggregation=aggregation),
                      residual=residual).double()
    x2, e2, u2 = gn(Graph(x, e, u, ei, batch, 2))[:3]

    # The same by hand, one edge / node / graph at a time, with the block's own MLPs.
    phi_e, phi_v, phi_u = gn.edge_block.mlp, gn.node_block.mlp, gn.global_block.mlp
    reduce = {"sum": lambda r: r.sum(0), "mean": lambda r: r.mean(0), "max": lambda r: r.max(0).values}

    def agg(rows, width):
        return reduce[aggregation](rows) if len(rows) else torch.zeros(width, dtype=torch.float64)

    e_new = torch.stack([phi_e(torch.cat([e[k], x[s], x[r], u[batch[s]]]))
                         for k, (s, r) in enumerate(ei.T.tolist())])
    x_new = torch.stack([phi_v(torch.cat([x[i], agg(e_new[ei[1] == i], Fe), u[batch[i]]]))
                         for i in range(x.shape[0])])
    edge_graph = batch[ei[0]]
    u_new = torch.stack([phi_u(torch.cat([u[g], agg(e_new[edge_graph == g], Fe), agg(x_new[batch == g], Fn)]))
                         for g in range(u.shape[0])])
    if residual:
        x_new, e_new, u_new = x_new + x, e_new + e, u_new + u
    torch.testing.assert_close(e2, e_new)
    torch.testing.assert_close(x2, x_new)
    torch.testing.assert_close(u2, u_new)
    assert x2.shape == (x.shape[0], Fn) and e2.shape == (e.shape[0], Fe) and u2.shape == (2, Fg)


def test_graph_network_without_globals_passes_u_through():
    x, e, _, ei, batch, B = two_graphs()
    gn = GraphNetwork(EdgeBlock(EDGE, NODE, 0, 6, hidden_size=8),
                      NodeBlock(NODE, 6, 0, 7, hidden_size=8)).double()
    x2, e2, u2 = gn(Graph(x, e, None, ei, batch, B))[:3]
    assert u2 is None and x2.shape == (x.shape[0], 7) and e2.shape == (e.shape[0], 6)
    manual_e = gn.edge_block.mlp(torch.cat([e, x[ei[0]], x[ei[1]]], -1))
    torch.testing.assert_close(e2, manual_e)
    with pytest.raises(ValueError, match="globals"):
        EdgeBlock(EDGE, NODE, GLOBAL, 6).double()(Graph(x, e, None, ei, batch, B))


def assert_same_graph(a: Graph, b: Graph):
    for key in ("x", "edge_attr", "u"):
        va, vb = getattr(a, key), getattr(b, key)
        assert (va is None) == (vb is None), key
        if va is not None:
            torch.testing.assert_close(va, vb, rtol=0, atol=0)
    assert a.edge_index is b.edge_index and a.batch is b.batch and a.num_graphs == b.num_graphs


@pytest.mark.parametrize("residual", [False, True])
def test_a_graph_network_is_the_composition_of_its_blocks(residual):
    """graph_nets' contract: the composed module equals its parts applied in turn."""
    g = two_graphs()
    size = (NODE, EDGE, GLOBAL) if not residual else (6, 6, 6)
    if residual:
        g = g._replace(x=torch.randn(g.x.shape[0], 6, dtype=torch.float64),
                       edge_attr=torch.randn(g.edge_attr.shape[0], 6, dtype=torch.float64),
                       u=torch.randn(2, 6, dtype=torch.float64))
    n, e, u = size
    Fn, Fe, Fg = (6, 6, 6) if residual else (7, 8, 9)
    edge, node, glob = (EdgeBlock(e, n, u, Fe, hidden_size=8), NodeBlock(n, Fe, u, Fn, hidden_size=8),
                        GlobalBlock(u, Fe, Fn, Fg, hidden_size=8))
    gn = GraphNetwork(edge, node, glob, residual=residual).double()
    parts = glob(node(edge(g)))
    if residual:
        parts = parts._replace(x=parts.x + g.x, edge_attr=parts.edge_attr + g.edge_attr, u=parts.u + g.u)
    assert_same_graph(gn(g), parts)
    # Each block replaces only its own features.
    assert edge(g).x is g.x and edge(g).u is g.u and node(g._replace(edge_attr=edge(g).edge_attr)).u is g.u


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("use_globals", [True, False])
def test_encode_process_decode_is_the_composition_of_its_parts(shared, use_globals):
    g = two_graphs()
    kw = {} if use_globals else dict(use_globals=False, global_out=0)
    m = model(message_passing_steps=3, shared_weights=shared, **kw)
    latent = m.encode(g)
    assert latent.x.shape == (g.x.shape[0], 16) and (latent.u is not None) == use_globals
    blocks = [m.processor[0]] * 3 if shared else list(m.processor)
    processed = blocks[2](blocks[1](blocks[0](latent)))
    assert_same_graph(m.process(latent), processed)
    assert_same_graph(m(g), m.decode(processed))


# ------------------------------------------------------------------------------------ symmetries
def test_permutation_equivariance():
    x, e, u, ei, batch, B = two_graphs()
    m = model(aggregation="max")
    out = m(Graph(x, e, u, ei, batch, B))
    perm_n = torch.randperm(x.shape[0])  # new node i is old node perm_n[i]
    perm_e = torch.randperm(e.shape[0])
    inv_n = torch.argsort(perm_n)  # old node j is new node inv_n[j]
    out_p = m(Graph(x[perm_n], e[perm_e], u, inv_n[ei[:, perm_e]], batch[perm_n], B))
    torch.testing.assert_close(out_p.x, out.x[perm_n])
    torch.testing.assert_close(out_p.edge_attr, out.edge_attr[perm_e])
    torch.testing.assert_close(out_p.u, out.u)
    assert not torch.allclose(out.x[perm_n], out.x)  # the check is not vacuous


@pytest.mark.parametrize("use_globals", [True, False])
def test_batch_equals_separate_graphs(use_globals):
    gen = torch.Generator().manual_seed(2)
    g1, g2 = random_graph(7, 12, isolated=2, gen=gen), random_graph(3, 4, gen=gen)
    kw = {} if use_globals else dict(use_globals=False, global_out=0)
    m = model(**kw)
    together = m(batch_graphs([g1, g2]))
    alone = [m(batch_graphs([g])) for g in (g1, g2)]
    for key in ("x", "edge_attr", "u"):
        if getattr(together, key) is None:
            assert not use_globals and key == "u"
            continue
        torch.testing.assert_close(getattr(together, key), torch.cat([getattr(a, key) for a in alone]))


def test_forward_batch_on_pyg_batch():
    gen = torch.Generator().manual_seed(3)
    graphs = [random_graph(n, 2 * n, gen=gen, dtype=torch.float32) for n in (4, 7)]
    data = Batch.from_data_list([Data(x=x, edge_attr=e, u=u, edge_index=ei, num_nodes=x.shape[0])
                                 for x, e, u, ei in graphs])
    m = model().float()
    out = m(Graph.from_pyg(data))
    ref = m(batch_graphs(graphs))
    assert out.x.shape == (11, 2) and out.edge_attr.shape == (22, 3) and out.u.shape == (2, 2)
    for key in ("x", "edge_attr", "u"):
        torch.testing.assert_close(getattr(out, key), getattr(ref, key))


def test_no_global_input_and_shape_errors():
    x, e, _, ei, batch, B = two_graphs()
    m = EncodeProcessDecode(NODE, EDGE, 0, latent_size=8, mlp_hidden_size=8, node_out=1, global_out=4)
    m = m.double()
    out = m(Graph(x, e, None, ei, batch, B))
    assert out.edge_attr is None and out.x.shape == (10, 1) and out.u.shape == (2, 4)
    assert m.global_encoder is None
    with pytest.raises(ValueError, match="use_globals"):
        EncodeProcessDecode(NODE, EDGE, GLOBAL, use_globals=False, global_out=1)
    with pytest.raises(ValueError, match="expected x"):
        model()(Graph(x[:, :3], e, torch.zeros(2, GLOBAL).double(), ei, batch, B))
    with pytest.raises(ValueError, match="expected u"):
        model()(Graph(x, e, None, ei, batch, B))


def test_forward_keeps_no_state():
    g = two_graphs()
    m = model()

    def tensor_attrs():
        return {(name, k) for name, mod in m.named_modules() for k, v in vars(mod).items()
                if isinstance(v, torch.Tensor)}

    before = tensor_attrs()
    m(g).x.sum().backward()
    assert tensor_attrs() == before
    assert not list(m.buffers())  # nothing device-bound besides parameters


# ------------------------------------------------------------------------- processor structure
def test_shared_weights_fewer_parameters_and_finite():
    g = two_graphs()

    def count(m):
        return sum(p.numel() for p in m.parameters())

    shared, distinct = model(message_passing_steps=3, shared_weights=True), model(message_passing_steps=3)
    assert len(shared.processor) == 1 and len(distinct.processor) == 3
    block = count(distinct.processor[0])
    assert count(distinct) - count(shared) == 2 * block > 0
    for m in (shared, distinct):
        out = m(g)
        assert all(torch.isfinite(v).all() for v in (out.x, out.edge_attr, out.u))


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("shared", [False, True])
def test_information_travels_exactly_m_hops(steps, shared):
    n = steps + 2  # a chain 0 - 1 - ... - (M+1)
    a = torch.arange(n - 1)
    ei = torch.cat([torch.stack([a, a + 1]), torch.stack([a + 1, a])], 1)
    x = torch.randn(n, NODE, dtype=torch.float64)
    e = torch.randn(ei.shape[1], EDGE, dtype=torch.float64)
    batch = torch.zeros(n, dtype=torch.long)
    m = model(message_passing_steps=steps, shared_weights=shared, use_globals=False, global_out=0,
              aggregation="sum")
    x_changed = x.clone()
    x_changed[0] += 1.0
    diff = (m(Graph(x_changed, e, None, ei, batch, 1)).x - m(Graph(x, e, None, ei, batch, 1)).x).abs().amax(-1)
    assert (diff[: steps + 1] > 1e-8).all(), diff  # nodes 0..M hops away see the change
    assert diff[steps + 1] == 0, diff  # node M+1 hops away does not


# ------------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("aggregation", ["sum", "max"])
def test_gradients_reach_every_parameter_and_input(aggregation):
    x, e, u, ei, batch, B = two_graphs()
    x, e, u = (t.clone().requires_grad_() for t in (x, e, u))
    m = model(aggregation=aggregation)
    out = m(Graph(x, e, u, ei, batch, B))
    # Random weights: a plain sum of outputs could cancel (e.g. through a LayerNorm).
    loss = sum((v * torch.randn_like(v)).sum() for v in (out.x, out.edge_attr, out.u))
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    for t in (x, e, u):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_overfits_neighbour_sum_regression():
    gen = torch.Generator().manual_seed(4)
    graphs = [random_graph(int(n), 2 * int(n), gen=gen, dtype=torch.float32)
              for n in torch.randint(4, 9, (8,), generator=gen)]
    g = batch_graphs(graphs)
    x, ei = g.x, g.edge_index
    target = aggregate(x[ei[0], :2], ei[1], x.shape[0], "sum")  # [N, 2]: sum of senders' features
    m = EncodeProcessDecode(NODE, EDGE, GLOBAL, latent_size=32, mlp_hidden_size=32, message_passing_steps=1,
                            node_out=2)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = (m(g).x - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert target.var() > 1.0
    assert losses[-1] < 0.01 * losses[0] and losses[-1] < 0.05, (losses[0], losses[-1])


def test_normalizer_statistics_follow_new_data_and_loaded_state():
    from gndesign.normalization import Normalizer

    norm = Normalizer(2)
    with pytest.raises(RuntimeError, match="no statistics"):
        norm(torch.zeros(1, 2))
    norm.accumulate(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    assert torch.allclose(norm(torch.tensor([[1.0, 2.0]])), torch.zeros(1, 2))  # cached from here on
    norm.accumulate(torch.tensor([[10.0, 11.0]]))  # the cache must not go stale
    assert torch.allclose(norm(torch.tensor([[4.0, 5.0]])), torch.zeros(1, 2))
    other = Normalizer(2)
    other.accumulate(torch.tensor([[100.0, 100.0], [102.0, 102.0]]))
    norm.load_state_dict(other.state_dict())
    assert torch.allclose(norm(torch.tensor([[101.0, 101.0]])), torch.zeros(1, 2))
