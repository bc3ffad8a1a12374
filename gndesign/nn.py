"""The learnable core: graph-network blocks and an encode-process-decode model.

Nothing here knows about physics. Every block takes and returns one :class:`Graph`: feature
tensors plus a separate topology, the way PyTorch Geometric batches graphs:

* ``x [num_nodes, F_node]``: node features;
* ``edge_attr [num_edges, F_edge]``: edge features;
* ``u [num_graphs, F_global]`` or ``None``: graph-level (global) features;
* ``edge_index [2, num_edges]``: row 0 holds the sender, row 1 the receiver of each edge;
* ``batch [num_nodes]``: the graph each node belongs to (``0 .. num_graphs-1``);
* ``num_graphs``: ``B`` (graphs may have no nodes).

A batch may mix graphs of different sizes (different systems) and graphs with isolated nodes.

The blocks follow Battaglia et al. (2018), "Relational inductive biases, deep learning, and graph
networks", and are applied in the order edge -> node -> global:

* :class:`EdgeBlock`:   ``e'_k = phi_e([e_k, x_{s_k}, x_{r_k}, u_{g_k}])``
* :class:`NodeBlock`:   ``x'_i = phi_v([x_i, rho_{e->v}({e'_k : r_k = i}), u_{g_i}])``
* :class:`GlobalBlock`: ``u'_g = phi_u([u_g, rho_{e->u}({e'_k in g}), rho_{v->u}({x'_i in g})])``

:class:`GraphNetwork` composes them (optionally with a residual connection) and
:class:`EncodeProcessDecode` stacks an encoder, ``M`` residual graph networks and a decoder, as in
Sanchez-Gonzalez et al. (2020), "Learning to simulate complex physics with graph networks".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "AGGREGATIONS",
    "EdgeBlock",
    "EncodeProcessDecode",
    "GlobalBlock",
    "Graph",
    "GraphNetwork",
    "NodeBlock",
    "aggregate",
    "build_mlp",
]

AGGREGATIONS = ("sum", "mean", "max")

ActivationFactory = Callable[[], nn.Module]


class Graph(NamedTuple):
    """A batch of graphs (see the module docstring for the shapes): what every block takes and
    returns. A block returns the input graph with the features it updates replaced; a decoded
    graph (:meth:`EncodeProcessDecode.decode`) holds None for each output it does not decode."""

    x: Tensor | None
    edge_attr: Tensor | None
    u: Tensor | None
    edge_index: Tensor
    batch: Tensor
    num_graphs: int

    @property
    def edge_batch(self) -> Tensor:
        """``[num_edges]``: the graph of each edge (that of its sender)."""
        return self.batch[self.edge_index[0]]

    @classmethod
    def from_pyg(cls, data: Any) -> Graph:
        """The graphs of a PyG ``Batch`` with ``x``, ``edge_attr``, ``u`` (optional), ``edge_index``,
        ``batch`` and ``num_graphs``."""
        return cls(data.x, data.edge_attr, getattr(data, "u", None), data.edge_index, data.batch,
                   int(data.num_graphs))


def build_mlp(in_size: int, hidden_size: int, out_size: int, num_hidden_layers: int = 2,
              layer_norm: bool = True, activation: ActivationFactory = nn.SiLU) -> nn.Sequential:
    """A multilayer perceptron ``[*, in_size] -> [*, out_size]``.

    ``num_hidden_layers`` blocks ``Linear -> activation`` (width ``hidden_size``), then a final
    ``Linear`` to ``out_size`` and, if ``layer_norm``, a ``LayerNorm(out_size)``. Encoders and the
    processor use the final LayerNorm (it keeps latents at a stable scale across message-passing
    steps); decoders do not (their outputs are regression targets).

    Args:
        activation: a factory (class or callable without arguments) returning the activation
            module, e.g. ``nn.SiLU`` (default; smooth, so gradients used by planners and design
            optimizers are continuous) or ``nn.ReLU``.
    """
    if min(in_size, out_size) < 1 or (num_hidden_layers > 0 and hidden_size < 1) or num_hidden_layers < 0:
        raise ValueError(f"invalid MLP sizes: in={in_size}, hidden={hidden_size}, out={out_size}, "
                         f"layers={num_hidden_layers}")
    layers: list[nn.Module] = []
    size = in_size
    for _ in range(num_hidden_layers):
        layers += [nn.Linear(size, hidden_size), activation()]
        size = hidden_size
    layers.append(nn.Linear(size, out_size))
    if layer_norm:
        layers.append(nn.LayerNorm(out_size))
    return nn.Sequential(*layers)


def aggregate(src: Tensor, index: Tensor, num_segments: int, reduce: str = "sum") -> Tensor:
    """Reduce rows of ``src [K, F]`` into ``[num_segments, F]`` by segment ``index [K]``.

    Empty segments (e.g. isolated nodes, graphs without edges) give zeros for every reduction.
    Works on plain torch (no torch_scatter needed) and is differentiable.
    """
    out = src.new_zeros((num_segments,) + tuple(src.shape[1:]))
    if reduce == "sum":
        return out.index_add_(0, index, src)
    if reduce == "mean":
        out = out.index_add_(0, index, src)
        count = torch.bincount(index, minlength=num_segments).clamp_min_(1).to(src.dtype)
        return out / count.view((-1,) + (1,) * (src.dim() - 1))
    if reduce == "max":
        idx = index.view((-1,) + (1,) * (src.dim() - 1)).expand_as(src)
        return out.scatter_reduce_(0, idx, src, reduce="amax", include_self=False)
    raise ValueError(f"unknown aggregation {reduce!r}; choose one of {AGGREGATIONS}")


def _apply_mlp_to_concat(mlp: nn.Sequential, parts: list[tuple[Tensor, Tensor | None]]) -> Tensor:
    """``mlp(cat([src[index] if index is not None else src for src, index in parts], -1))``, faster.

    The first ``Linear`` is split by input columns so that rows gathered from a smaller set (node
    or global features gathered per edge, global features gathered per node) are projected
    *before* the gather: ``W [a, b[s]] = W_a a + (W_b b)[s]``. This avoids materializing the wide
    concatenation and cuts the multiply-adds of the first layer (most of the cost of a GN block when
    edges outnumber nodes). The parameters are exactly those of the concatenated formulation.
    """
    first = mlp[0]
    weight, bias = first.weight, first.bias
    h = None
    col = 0
    for src, index in parts:
        width = src.shape[-1]
        proj = nn.functional.linear(src, weight[:, col:col + width])
        col += width
        if index is not None:
            proj = proj[index]
        h = proj if h is None else h + proj
    if col != weight.shape[1]:
        raise ValueError(f"inputs have {col} features in all, the MLP expects {weight.shape[1]}")
    if bias is not None:
        h = h + bias
    for layer in mlp[1:]:
        h = layer(h)
    return h


class _Block(nn.Module):
    """An update: an MLP over ``in_size`` concatenated input features plus, if ``global_size > 0``,
    the graph's globals; ``aggregation``: how it reduces edges or nodes (None: it does not).
    ``mlp``: ``hidden_size`` (128), ``num_hidden_layers`` (2), ``layer_norm`` (True), ``activation``
    (SiLU), as for :func:`build_mlp`."""

    def __init__(self, in_size: int, global_size: int, out_size: int, aggregation: str | None = None, **mlp):
        super().__init__()
        if aggregation is not None and aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {AGGREGATIONS}")
        self.use_globals = global_size > 0
        self.aggregation = aggregation
        mlp = {"hidden_size": 128, "num_hidden_layers": 2, "layer_norm": True, "activation": nn.SiLU, **mlp}
        self.mlp = build_mlp(in_size + global_size, out_size=out_size, **mlp)

    def _globals(self, graph: Graph) -> Tensor:
        if graph.u is None:
            raise ValueError(f"this {type(self).__name__} uses globals: the graph needs u")
        return graph.u


class EdgeBlock(_Block):
    """Edge update ``e'_k = phi_e([e_k, x[senders_k], x[receivers_k], u[graph_k]])``.

    Args:
        edge_size, node_size: input feature sizes; global_size: 0 for a block without globals.
        out_size: size of the updated edge features.
        mlp: the MLP's options (see :class:`_Block`).
    """

    def __init__(self, edge_size: int, node_size: int, global_size: int, out_size: int, **mlp):
        super().__init__(edge_size + 2 * node_size, global_size, out_size, **mlp)

    def forward(self, graph: Graph) -> Graph:
        """``graph`` with ``edge_attr [num_edges, out_size]`` updated (``u`` needed iff the block
        uses globals)."""
        ei = graph.edge_index
        parts = [(graph.edge_attr, None), (graph.x, ei[0]), (graph.x, ei[1])]
        if self.use_globals:
            parts.append((self._globals(graph), graph.edge_batch))
        return graph._replace(edge_attr=_apply_mlp_to_concat(self.mlp, parts))


class NodeBlock(_Block):
    """Node update ``x'_i = phi_v([x_i, agg_{k: receiver_k = i} e'_k, u[graph_i]])``.

    Args:
        node_size, edge_size: input feature sizes (``edge_size`` is that of the updated edges);
        global_size: 0 for a block without globals; out_size: size of the updated node features.
        aggregation: ``"sum"`` (default), ``"mean"`` or ``"max"`` over incoming edges.
        mlp: the MLP's options (see :class:`_Block`).
    """

    def __init__(self, node_size: int, edge_size: int, global_size: int, out_size: int, aggregation: str = "sum",
                 **mlp):
        super().__init__(node_size + edge_size, global_size, out_size, aggregation, **mlp)

    def forward(self, graph: Graph) -> Graph:
        """``graph`` (its edges already updated) with ``x [num_nodes, out_size]`` updated (``u``
        needed iff the block uses globals)."""
        x = graph.x
        parts = [(x, None), (aggregate(graph.edge_attr, graph.edge_index[1], x.shape[0], self.aggregation), None)]
        if self.use_globals:
            parts.append((self._globals(graph), graph.batch))
        return graph._replace(x=_apply_mlp_to_concat(self.mlp, parts))


class GlobalBlock(_Block):
    """Global update ``u'_g = phi_u([u_g, agg_{edges in g} e'_k, agg_{nodes in g} x'_i])``.

    Args:
        global_size: input global size (0: the block reads only the aggregates);
        edge_size, node_size: sizes of the updated edges and nodes; out_size: updated global size.
        aggregation: ``"mean"`` (default, independent of graph size), ``"sum"`` or ``"max"``.
        mlp: the MLP's options (see :class:`_Block`).
    """

    def __init__(self, global_size: int, edge_size: int, node_size: int, out_size: int, aggregation: str = "mean",
                 **mlp):
        super().__init__(edge_size + node_size, global_size, out_size, aggregation, **mlp)

    def forward(self, graph: Graph) -> Graph:
        """``graph`` (its edges and nodes already updated) with ``u [num_graphs, out_size]``
        updated (``u`` is read iff the block reads globals)."""
        B = graph.num_graphs
        parts = [aggregate(graph.edge_attr, graph.edge_batch, B, self.aggregation),
                 aggregate(graph.x, graph.batch, B, self.aggregation)]
        if self.use_globals:
            parts.insert(0, self._globals(graph))
        return graph._replace(u=self.mlp(torch.cat(parts, dim=-1)))


class GraphNetwork(nn.Module):
    """A full GN block: edge, then node, then (optionally) global update; like PyG's MetaLayer.

    Args:
        edge_block, node_block: the edge and node updates.
        global_block: the global update, or None (globals then pass through unchanged).
        residual: add the inputs to the outputs (``x + x'``, ``e + e'``, ``u + u'``); the sizes
            must then be equal. The blocks themselves see the non-residual updates, as in
            graph_nets' interaction networks.
    """

    def __init__(self, edge_block: EdgeBlock, node_block: NodeBlock, global_block: GlobalBlock | None = None,
                 residual: bool = False):
        super().__init__()
        self.edge_block = edge_block
        self.node_block = node_block
        self.global_block = global_block
        self.residual = residual

    def forward(self, graph: Graph) -> Graph:
        """``graph`` with ``x [num_nodes, F_node']``, ``edge_attr [num_edges, F_edge']`` and (with a
        global block) ``u [num_graphs, F_global']`` updated; ``u`` passes through otherwise."""
        out = self.node_block(self.edge_block(graph))
        if self.global_block is not None:
            out = self.global_block(out)
        if self.residual:
            u = out.u + graph.u if (self.global_block is not None and graph.u is not None) else out.u
            out = out._replace(x=out.x + graph.x, edge_attr=out.edge_attr + graph.edge_attr, u=u)
        return out


class EncodeProcessDecode(nn.Module):
    """Encoder, ``M`` residual graph networks, decoder (Sanchez-Gonzalez et al. 2020).

    Args:
        node_in, edge_in, global_in: input feature sizes (``global_in`` may be 0).
        latent_size: width of the latent node/edge/global features.
        mlp_hidden_size, mlp_layers: hidden width and number of hidden layers of every MLP.
        message_passing_steps: ``M``, the number of processor steps (information travels ``M``
            hops).
        shared_weights: reuse one processor block ``M`` times instead of ``M`` distinct blocks.
        node_out, edge_out, global_out: output sizes; only those > 0 are decoded.
        aggregation: edge-to-node aggregation (``"sum"``, ``"mean"``, ``"max"``).
        global_aggregation: edge/node-to-global aggregation (default ``"mean"``).
        use_globals: keep a latent global per graph (encoded from ``u`` when ``global_in > 0``,
            else starting at zero) and update it in every step. Without it, graphs exchange no
            information through globals and ``global_out`` must be 0.
        activation: activation factory for every MLP (see :func:`build_mlp`).
    """

    def __init__(self, node_in: int, edge_in: int, global_in: int, latent_size: int = 128,
                 mlp_hidden_size: int = 128, mlp_layers: int = 2, message_passing_steps: int = 2,
                 shared_weights: bool = False, node_out: int = 0, edge_out: int = 0, global_out: int = 0,
                 aggregation: str = "sum", use_globals: bool = True, global_aggregation: str = "mean",
                 activation: ActivationFactory = nn.SiLU):
        super().__init__()
        if global_out > 0 and not use_globals:
            raise ValueError("global_out > 0 needs use_globals=True")
        if message_passing_steps < 0:
            raise ValueError(f"message_passing_steps must be >= 0, got {message_passing_steps}")
        self.node_in, self.edge_in, self.global_in = node_in, edge_in, global_in
        self.node_out, self.edge_out, self.global_out = node_out, edge_out, global_out
        self.latent_size = latent_size
        self.message_passing_steps = message_passing_steps
        self.shared_weights = shared_weights
        self.use_globals = use_globals
        L = latent_size

        def mlp(i: int, o: int, layer_norm: bool) -> nn.Sequential:
            return build_mlp(i, mlp_hidden_size, o, mlp_layers, layer_norm, activation)

        # Encoder.
        self.node_encoder = mlp(node_in, L, True)
        self.edge_encoder = mlp(edge_in, L, True)
        self.global_encoder = mlp(global_in, L, True) if (use_globals and global_in > 0) else None

        # Processor.
        G = L if use_globals else 0

        def gn() -> GraphNetwork:
            kw = dict(hidden_size=mlp_hidden_size, num_hidden_layers=mlp_layers, layer_norm=True,
                      activation=activation)
            return GraphNetwork(
                EdgeBlock(L, L, G, L, **kw),
                NodeBlock(L, L, G, L, aggregation=aggregation, **kw),
                GlobalBlock(L, L, L, L, aggregation=global_aggregation, **kw) if use_globals else None,
                residual=True)

        num_blocks = min(1, message_passing_steps) if shared_weights else message_passing_steps
        self.processor = nn.ModuleList(gn() for _ in range(num_blocks))

        # Decoder.
        self.node_decoder = mlp(L, node_out, False) if node_out > 0 else None
        self.edge_decoder = mlp(L, edge_out, False) if edge_out > 0 else None
        self.global_decoder = mlp(L, global_out, False) if global_out > 0 else None

    # ------------------------------------------------------------------------------------ stages
    def encode(self, graph: Graph) -> Graph:
        """The latent graph: ``x [N, L]``, ``edge_attr [E, L]``, ``u [B, L]`` (None without
        ``use_globals``; zeros when there is no global input, whose ``u`` is then ignored)."""
        x, edge_attr, B = graph.x, graph.edge_attr, graph.num_graphs
        if x.shape[-1] != self.node_in or edge_attr.shape[-1] != self.edge_in:
            raise ValueError(f"expected x [N, {self.node_in}] and edge_attr [E, {self.edge_in}], got "
                             f"{list(x.shape)} and {list(edge_attr.shape)}")
        h_x = self.node_encoder(x)
        h_e = self.edge_encoder(edge_attr)
        h_u = None
        if self.use_globals:
            if self.global_encoder is not None:
                u = graph.u
                if u is None or u.shape != (B, self.global_in):
                    got = None if u is None else list(u.shape)
                    raise ValueError(f"expected u [{B}, {self.global_in}], got {got}")
                h_u = self.global_encoder(u)
            else:
                h_u = h_x.new_zeros(B, self.latent_size)
        return graph._replace(x=h_x, edge_attr=h_e, u=h_u)

    def process(self, latent: Graph, steps: int | None = None) -> Graph:
        """``M`` residual message-passing steps on the latent graph (``steps``: only the first
        ``steps`` of them, for a graph whose information needs fewer hops)."""
        steps = self.message_passing_steps if steps is None else steps
        if not 0 <= steps <= self.message_passing_steps:
            raise ValueError(f"steps must be in [0, {self.message_passing_steps}], got {steps}")
        for step in range(steps):
            latent = self.processor[0 if self.shared_weights else step](latent)
        return latent

    def decode(self, latent: Graph) -> Graph:
        """The output graph: ``x [N, node_out]``, ``edge_attr [E, edge_out]``, ``u [B, global_out]``
        (None for each output of size 0)."""
        return latent._replace(
            x=self.node_decoder(latent.x) if self.node_decoder is not None else None,
            edge_attr=self.edge_decoder(latent.edge_attr) if self.edge_decoder is not None else None,
            u=self.global_decoder(latent.u) if self.global_decoder is not None else None)

    def forward(self, graph: Graph, steps: int | None = None) -> Graph:
        """``decode(process(encode(graph), steps))``: ``graph`` with ``x [num_nodes, node_in]``,
        ``edge_attr [num_edges, edge_in]`` and ``u [num_graphs, global_in]`` (None allowed when
        ``global_in == 0`` or not ``use_globals``) in, the decoded graph out."""
        return self.decode(self.process(self.encode(graph), steps))
