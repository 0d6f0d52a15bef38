"""The supergraph (AttentionNAS Sec. 4.2, Fig. 2): every cell of a space as one network.

m levels of the same n nodes, each a fixed (type, dim) attention op. Level 1 reads f0; node j at
level i >= 2 reads ``Σ_k p_level[i, j, k] · out[i-1, k]`` (Eq. 4); each node returns
``Σ_a p_act[i, j, a] · op_a(input)`` (Eq. 5) through the ops' multi-activation path (G1, G2,
G3 and the similarity computed once per node, one product with the value); the sink is
``Σ p_sink[i, j] · G_ij(out[i, j])`` (Eq. 6) with G_ij a 1×1×1 conv C_op -> C, then a
BatchNorm whose weight starts at zero, and the residual: at initialisation the supergraph is
the identity map.

Work shared across nodes, so that search costs about one training run (``fused=True``, the
default; ``forward_per_node`` is the plain node-by-node computation, kept as the reference the
fused path is tested against to 1e-10 in float64, gradients included):

- node outputs are kept channels-last, ``(B, T, H, W, C_op)``, where ReshapeTo2D of every dim
  is a view (a channels-last-3d input needs no copy at all);
- level 1: every node reads f0, so all its per-channel projections (each node's G3, G1 and G2
  of spatial and spatiotemporal dot nodes, AvgPool∘G1 of map nodes) are one product, and the
  temporal nodes' frame-wide G1/G2 a second one (the nodes' weights concatenated per call:
  each node keeps its own parameters, which a derived cell inherits);
- AvgPool∘G1 of a map node is linear, so it is one output (the mean of G1's rows) instead of
  C' averaged afterwards;
- levels >= 2: Eq. 4 for all nodes of a level is one ``(n, n) x (n, ·)`` product; each node's
  projections are one product;
- Eq. 5 on the attention weights is one autograd node per op (``_Mix``: the derivative written
  out, a few kernels where autograd's multiply-adds took five each);
- the sink's n·m convolutions and the weighted sum are one product over the concatenated node
  outputs with the sink-weighted kernels (Σ_ij p_ij (W_ij o_ij + b_ij) = [p_ij W_ij] · [o_ij] +
  Σ p_ij b_ij).

Ops of other types (BAT, RSA, STA, a user's own) run through their own ``forward_mixed``
inside the fused levels. ``torch.compile`` is not applied by default: inductor's CPU compile of
one supergraph at (64, 4, 4, 4) took 159 s (481 s on loaded cores) and then ran its training
step 1.7x faster; ``module.compile()`` (or ``python -m experiments.bench --compile``) applies it
where a run is long enough to pay for that. The fused path, and a backbone holding supergraphs,
trace as one graph without breaks.

The connection weights are not parameters of this module's own: an ``ArchitectureWeights`` is
passed in (shared by all supergraphs of a backbone for position-agnostic search, one per
position for position-specific search) and registered as a non-owned reference, so network
optimisers built from ``network_parameters()`` never see it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from attnas.ops import AttentionOp, MatrixAttention, build_op
from attnas.ops.dot_attention import DotAttention
from attnas.ops.map_attention import MapAttention
from attnas.space import OpSpec, SearchSpace
from attnas.supergraph.weights import ArchitectureWeights


class SuperGraph(nn.Module):
    """Supergraph for feature maps of ``shape = (C, T, H, W)``.

    Args:
        levels: m.
        nodes: the n ``(type, dim)`` nodes of each level.
        channels: C.
        op_channels: C_op, every node's output channels.
        shape: ``(C, T, H, W)``.
        activations: each node's activations (same order as ``nodes``).
        arch_weights: the connection weights to use (shared or per position); a new one is
            made when omitted.
        op_params: per-type options for ``build_op``.
        fused: batch the work of a level (the default); False runs every node through its
            op's ``forward_mixed`` (``forward_per_node``, the reference the fused path equals).

    Shape:
        ``(B, C, T, H, W) -> (B, C, T, H, W)``.
    """

    def __init__(
        self,
        levels: int,
        nodes: Sequence[tuple[str, str]],
        channels: int,
        op_channels: int,
        shape: tuple[int, int, int, int],
        activations: Sequence[Sequence[str]],
        arch_weights: ArchitectureWeights | None = None,
        op_params: Mapping[str, Mapping[str, Any]] | None = None,
        fused: bool = True,
    ):
        super().__init__()
        self.fused = fused
        shape = tuple(int(s) for s in shape)
        if shape[0] != channels:
            raise ValueError(f"SuperGraph: shape {shape} has C={shape[0]} but channels={channels}")
        self.levels = levels
        self.node_types = [tuple(n) for n in nodes]
        self.node_activations = [tuple(a) for a in activations]
        self.channels = channels
        self.op_channels = op_channels
        self.shape = shape
        if arch_weights is None:
            arch_weights = ArchitectureWeights(levels, self.node_types, self.node_activations)
        if (arch_weights.levels, arch_weights.nodes, arch_weights.activations) != (
            levels,
            self.node_types,
            self.node_activations,
        ):
            raise ValueError("SuperGraph: arch_weights were made for another supergraph shape")
        # Stored outside _modules: the weights belong to the search, not to this network.
        object.__setattr__(self, "arch_weights", arch_weights)
        op_params = {ty: dict(params) for ty, params in (op_params or {}).items()}
        # kept so that a derived cell is built with the same op options (cell_from_supergraph)
        self.op_params = op_params
        _, t, h, w = shape
        self.nodes = nn.ModuleList()
        for level in range(levels):
            c_in = channels if level == 0 else op_channels
            row = nn.ModuleList(
                build_op(
                    OpSpec(ty, dim, acts[0]),
                    c_in,
                    op_channels,
                    (c_in, t, h, w),
                    **dict(op_params.get(ty, {})),
                )
                for (ty, dim), acts in zip(self.node_types, self.node_activations)
            )
            self.nodes.append(row)
        n_total = levels * len(self.node_types)
        self.sink_convs = nn.ModuleList(
            nn.Conv3d(op_channels, channels, kernel_size=1) for _ in range(n_total)
        )
        self.out_norm = nn.BatchNorm3d(channels)
        nn.init.zeros_(self.out_norm.weight)
        # Eq. 5 of the fused path as Σ_a (p_a k_a) t_a: k_a = 1/N for the none and relu terms of
        # dot nodes (DotAttention divides those by the N attended positions), else 1
        a_max = max(len(a) for a in self.node_activations)
        scale = torch.ones(len(self.node_types), a_max)
        for j, op in enumerate(self.nodes[0]):
            if type(op) is DotAttention:
                for a, act in enumerate(self.node_activations[j]):
                    if act in ("none", "relu"):
                        scale[j, a] = 1.0 / op.num_positions
        self.register_buffer("_act_scale", scale, persistent=False)

    @classmethod
    def from_space(
        cls,
        space: SearchSpace,
        channels: int,
        shape: tuple[int, int, int, int],
        arch_weights: ArchitectureWeights | None = None,
    ) -> SuperGraph:
        """The supergraph a search space describes (its nodes, levels and activations)."""
        nodes = list(space.supergraph.nodes)
        return cls(
            space.supergraph.levels,
            nodes,
            channels,
            space.op_channels(channels),
            shape,
            [space.activations_for(t) for t, _ in nodes],
            arch_weights=arch_weights,
            op_params={t: space.op_params(t) for t in space.op_types},
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"SuperGraph was built for (B, {', '.join(map(str, self.shape))}), "
                f"got {tuple(x.shape)}"
            )
        if not self.fused:
            return self.forward_per_node(x)
        return self._forward_fused(x)

    # ------------------------------------------------------------------ per-node reference
    def forward_per_node(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 4-6 node by node through each op's ``forward_mixed`` (the fused path's reference)."""
        aw = self.arch_weights
        act_p = aw.act_probs()  # (m, n, A)
        level_p = aw.level_probs() if self.levels > 1 else None  # (m-1, n, n)
        sink_p = aw.sink_probs()  # (m*n,)
        outs: list[torch.Tensor] = []
        prev: torch.Tensor | None = None
        for level, row in enumerate(self.nodes):
            values = self._shared_values(row, x) if level == 0 else {}
            level_outs = []
            for j, op in enumerate(row):
                if level == 0:
                    inp = x
                else:
                    inp = torch.einsum("k,kbcthw->bcthw", level_p[level - 1, j], prev)
                acts = self.node_activations[j]
                weights = act_p[level, j, : len(acts)]
                level_outs.append(op.forward_mixed(inp, weights, acts, value=values.get(j)))
            prev = torch.stack(level_outs)  # (n, B, C_op, T, H, W)
            outs.extend(level_outs)
        weighted = torch.cat([p * o for p, o in zip(sink_p, outs)], dim=1)  # (B, m*n*C_op, T, H, W)
        weight = torch.cat([conv.weight for conv in self.sink_convs], dim=1)  # (C, m*n*C_op, 1,1,1)
        bias = torch.stack([conv.bias for conv in self.sink_convs]).T @ sink_p  # (C,)
        fused = F.conv3d(weighted, weight, bias)  # (B, C, T, H, W)
        return x + self.out_norm(fused)

    def _shared_values(self, row: nn.ModuleList, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """G3 of every level-1 op with a value projection, computed as one convolution."""
        idx = [j for j, op in enumerate(row) if isinstance(op, MatrixAttention)]
        if not idx:
            return {}
        weight = torch.cat([row[j].g3.weight for j in idx])  # (k*C_op, C, 1, 1, 1)
        bias = torch.cat([row[j].g3.bias for j in idx])
        values = F.conv3d(x, weight, bias).split(self.op_channels, dim=1)  # k x (B, C_op, ...)
        return dict(zip(idx, values))

    # ------------------------------------------------------------------------- fused path
    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 4-6 with the work of a level batched; equal to ``forward_per_node``.

        Node outputs are kept channels-last, ``(B, T, H, W, C_op)``, where every ReshapeTo2D is
        a view; a level's outputs are stacked as ``(n, B, T, H, W, C_op)``.
        """
        outs_all = self._fused_nodes(x)  # (m*n, B, T, H, W, C_op)
        # after the nodes' weights: a sampled mixing (Dirichlet, perturbation) draws in this order
        sink_p = self.arch_weights.sink_probs()  # (m*n,)
        b, (c, t, h, w), c_op = x.shape[0], self.shape, self.op_channels
        # Eq. 6: Σ_ij p_ij (W_ij o_ij + b_ij) = [p_ij W_ij] · [o_ij] + Σ p_ij b_ij, one product
        mn = len(sink_p)
        flat = outs_all.view(mn, -1, c_op).transpose(0, 1).reshape(-1, mn * c_op)  # (BTHW, mn C_op)
        weight = torch.cat([conv.weight for conv in self.sink_convs], dim=1).view(c, mn, c_op)
        weight = (weight * sink_p[:, None]).view(c, mn * c_op)  # (C, m*n*C_op)
        bias = sink_p @ torch.stack([conv.bias for conv in self.sink_convs])  # (C,)
        y = F.linear(flat, weight, bias).view(b, t, h, w, c)  # (B, T, H, W, C)
        return x + self.out_norm(y.permute(0, 4, 1, 2, 3))  # (B, C, T, H, W)

    def _fused_nodes(self, x: torch.Tensor) -> torch.Tensor:
        """Every node's output (Eq. 4-5, the levels' work batched), level-major:
        ``(m*n, B, T, H, W, C_op)``."""
        aw = self.arch_weights
        n, c_op = len(self.node_types), self.op_channels
        act_p = aw.act_probs()  # (m, n, A)
        coefs = (act_p * self._act_scale).view(-1, act_p.shape[-1]).unbind(0)  # m*n x (A,)
        level_p = aw.level_probs().unbind(0) if self.levels > 1 else ()  # m-1 x (n, n)
        b = x.shape[0]
        _, t, h, w = self.shape
        stacks: list[torch.Tensor] = []
        for level, row in enumerate(self.nodes):
            if level == 0:
                inputs = None
            else:  # Eq. 4 for every node of the level: one (n, n) x (n, B*T*H*W*C_op) product
                prev = stacks[-1].view(n, -1)
                mixed = torch.mm(level_p[level - 1], prev).view(n, b, t, h, w, c_op)
                inputs = mixed.unbind(0)  # one view per node (indexing would zero-fill n x)
            outs = self._level_fused(row, x, inputs, coefs[level * n : (level + 1) * n])
            stacks.append(torch.stack(outs))  # (n, B, T, H, W, C_op)
        return torch.cat(stacks) if len(stacks) > 1 else stacks[0]

    def _level_fused(
        self,
        row: nn.ModuleList,
        x: torch.Tensor,
        inputs: Sequence[torch.Tensor] | None,
        coefs: Sequence[torch.Tensor],
    ) -> list[torch.Tensor]:
        """The outputs ``(B, T, H, W, C_op)`` of one level's nodes.

        Args:
            row: the level's ops.
            x: f0, ``(B, C, T, H, W)``.
            inputs: per node ``(B, T, H, W, C_op)``, its Eq. 4 input (None: level 1, f0).
            coefs: per node ``(A,)``, its activation probabilities times ``_act_scale``.
        """
        b = x.shape[0]
        _, t, h, w = self.shape
        fused = [j for j, op in enumerate(row) if type(op) in _FUSED_TYPES]
        outs: list[torch.Tensor | None] = [None] * len(row)
        if fused:
            if inputs is None:
                src = x.permute(0, 2, 3, 4, 1).contiguous()  # (B, T, H, W, C)
                chan, temp = self._projections_shared(row, fused, src)
            else:
                chan, temp = self._projections_own(row, fused, inputs)
            for j in fused:
                acts = self.node_activations[j]
                outs[j] = _attend_fused(
                    row[j], chan[j], temp.get(j), _own(coefs[j], acts), acts, (b, t, h, w)
                )
        for j, op in enumerate(row):
            if outs[j] is not None:
                continue
            acts = self.node_activations[j]
            inp = x if inputs is None else inputs[j].permute(0, 4, 1, 2, 3)  # (B, C_op, T, H, W)
            out = op.forward_mixed(inp, _own(coefs[j], acts), acts)  # (B, C_op, T, H, W)
            outs[j] = out.permute(0, 2, 3, 4, 1)
        return outs

    def _projections_shared(
        self, row: nn.ModuleList, fused: list[int], src: torch.Tensor
    ) -> tuple[dict[int, list[torch.Tensor]], dict[int, list[torch.Tensor]]]:
        """Level 1: every node reads f0, so all its projections are two products.

        The per-channel ones (``_channel_pieces``) are one ``(B*T*H*W, C) x (C, K)`` product;
        the per-frame ones of temporal nodes (``_temporal_pieces``, reading H*W*C features) one
        ``(B*T, H*W*C) x (H*W*C, K')`` product.

        Returns:
            ``{j: [G3, G1, (G2)]}`` views ``(B', N, k)`` (``_rows``; a temporal node's ``[G3]``
            is ``(B, T, H, W, C_op)``) and ``{j: [G1, (G2)]}`` views ``(B, T, k)`` of the
            temporal nodes (for map nodes G1 stands for AvgPool∘G1, k = 1).
        """
        b, t, h, w, c = src.shape
        chan_pieces = {j: _channel_pieces(row[j]) for j in fused}
        rows = {j: _rows(row[j].dim, (b, t, h, w)) for j in fused}
        chan = _split_product(src.view(-1, c), chan_pieces, rows)
        temporal = [j for j in fused if row[j].dim == "temporal"]
        temp = {}
        if temporal:
            temp_pieces = {j: _temporal_pieces(row[j]) for j in temporal}
            src_t = src.view(b * t, h * w * c)  # (B*T, H*W*C)
            temp = _split_product(src_t, temp_pieces, dict.fromkeys(temporal, (b, t)))
        return chan, temp

    def _projections_own(
        self, row: nn.ModuleList, fused: list[int], inputs: Sequence[torch.Tensor]
    ) -> tuple[dict[int, list[torch.Tensor]], dict[int, list[torch.Tensor]]]:
        """Levels >= 2: each node's projections read its own input ``inputs[j]``."""
        b, t, h, w, c = inputs[0].shape
        chan, temp = {}, {}
        for j in fused:
            op = row[j]
            rows = {j: _rows(op.dim, (b, t, h, w))}
            chan.update(_split_product(inputs[j].view(-1, c), {j: _channel_pieces(op)}, rows))
            if op.dim == "temporal":
                src = inputs[j].view(b * t, h * w * c)  # (B*T, H*W*C_op)
                temp.update(_split_product(src, {j: _temporal_pieces(op)}, {j: (b, t)}))
        return chan, temp

    def node(self, level: int, j: int) -> AttentionOp:
        """The op at 1-based ``level`` and 0-based index ``j``."""
        return self.nodes[level - 1][j]

    def sink_conv(self, level: int, j: int) -> nn.Conv3d:
        return self.sink_convs[(level - 1) * len(self.node_types) + j]

    def network_parameters(self) -> list[nn.Parameter]:
        """This module's own (network) parameters; never the connection weights."""
        return list(self.parameters())

    def extra_repr(self) -> str:
        return (
            f"levels={self.levels}, nodes={['/'.join(n) for n in self.node_types]}, "
            f"channels={self.channels}, op_channels={self.op_channels}, shape={self.shape}"
        )


# the op classes whose arithmetic the fused path restates (exactly these: a subclass may
# change it, so it runs through its own forward_mixed like any other type)
_FUSED_TYPES = (DotAttention, MapAttention)


def _own(coefs: torch.Tensor, activations: Sequence[str]) -> torch.Tensor:
    """A node's entries of its padded ``(A,)`` coefficient row."""
    return coefs if len(activations) == coefs.shape[0] else coefs[: len(activations)]


def _first_projections(op: MatrixAttention) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """G1 and G2 of a dot node; of a map node ``AvgPool ∘ G1``, which is linear: the mean of
    G1's rows and biases, one output instead of C' (``mean_c(W x + b) = mean_c(W) x +
    mean(b)``)."""
    if isinstance(op, DotAttention):
        return [(op.g1.weight, op.g1.bias), (op.g2.weight, op.g2.bias)]
    return [(op.g1.weight.mean(0, keepdim=True), op.g1.bias.mean(0, keepdim=True))]


def _channel_pieces(op: MatrixAttention) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The per-channel linear maps of a map or dot node, weights ``(k, C_in)``: G3, then (unless
    the node is temporal, whose G1, G2 read whole frames) ``_first_projections``."""
    pieces = [(op.g3.weight.flatten(1), op.g3.bias)]
    if op.dim != "temporal":
        pieces += _first_projections(op)
    return pieces


def _temporal_pieces(op: MatrixAttention) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``_first_projections`` of a temporal node: weights ``(k, H*W*C_in)``."""
    return _first_projections(op)


def _rows(dim: str, lead: tuple[int, int, int, int]) -> tuple[int, ...]:
    """The leading shape a per-channel projection of a ``dim`` node is used in: ReshapeTo2D of
    channels-last ``(B, T, H, W, k)`` is ``(B, T*H*W, k)`` (spatiotemporal) or ``(B*T, H*W, k)``
    (spatial); a temporal node's G3 output stays ``(B, T, H, W, k)`` (its ReshapeTo2D,
    ``(B, T, H*W*k)``, is not a view of a product holding other nodes' columns)."""
    b, t, h, w = lead
    if dim == "spatiotemporal":
        return (b, t * h * w)
    if dim == "spatial":
        return (b * t, h * w)
    return lead


def _split_product(
    src: torch.Tensor,
    pieces: Mapping[int, list[tuple[torch.Tensor, torch.Tensor]]],
    rows: Mapping[int, tuple[int, ...]],
) -> dict[int, list[torch.Tensor]]:
    """``src (R, D) x`` every piece's weight, as one product; the pieces' outputs as views.

    Args:
        src: ``(R, D)``.
        pieces: ``{j: [(weight (k_i, D), bias (k_i,)), ...]}``.
        rows: ``{j: leading shape}`` (product R) node j's outputs are viewed in.

    Returns:
        ``{j: [y_1, ...]}`` with ``y_i`` of shape ``(*rows[j], k_i)``.
    """
    # columns grouped by leading shape: one split into groups, one view and one split per
    # group (a split's backward is one concatenation; slicing or splitting a group's view
    # that also holds other groups would zero-fill the whole product once per piece)
    groups: dict[tuple[int, ...], list[int]] = {}
    for j in pieces:
        groups.setdefault(tuple(rows[j]), []).append(j)
    flat = [p for js in groups.values() for j in js for p in pieces[j]]
    weight = flat[0][0] if len(flat) == 1 else torch.cat([wt for wt, _ in flat])
    bias = flat[0][1] if len(flat) == 1 else torch.cat([bs for _, bs in flat])
    y = F.linear(src, weight, bias)  # (R, K)
    widths = {j: [wt.shape[0] for wt, _ in pieces[j]] for j in pieces}
    blocks = (
        [y]
        if len(groups) == 1
        else y.split([sum(sum(widths[j]) for j in js) for js in groups.values()], dim=-1)
    )
    out: dict[int, list[torch.Tensor]] = {}
    for block, (lead, js) in zip(blocks, groups.items()):
        views = iter(
            block.view(*lead, block.shape[-1]).split([k for j in js for k in widths[j]], dim=-1)
        )
        for j in js:
            out[j] = [next(views) for _ in widths[j]]
    return out


def _attend_fused(
    op: MatrixAttention,
    chan: list[torch.Tensor],
    temp: list[torch.Tensor] | None,
    coefs: torch.Tensor,
    activations: Sequence[str],
    lead: tuple[int, int, int, int],
) -> torch.Tensor:
    """A map or dot node's mixed output from its projections, ``(B, T, H, W, C_op)``.

    The same arithmetic as ``op.forward_mixed`` (Eq. 1-3 and 5), on channels-last tensors.

    Args:
        op: the node.
        chan: its per-channel projections, ``[G3, G1 (, G2)]`` as ``(B', N, k)`` (spatial,
            spatiotemporal; ``_rows``) or ``[G3]`` as ``(B, T, H, W, C_op)`` (temporal).
        temp: a temporal node's ``[G1 (, G2)]`` as ``(B, T, k)``.
        coefs: ``(A,)`` the activation coefficients (``SuperGraph._act_scale`` applied).
        activations: the node's activations.
        lead: ``(B, T, H, W)``.
    """
    b, t, h, w = lead
    value = chan[0]  # G3
    c_op = value.shape[-1]
    if op.dim == "temporal":
        v2 = value.reshape(b, t, h * w * c_op)  # (B, T, H*W*C_op)
        g = temp  # (B, T, C') each
    else:
        v2, g = value, chan[1:]  # (B', N, C_op), (B', N, C') each
    if isinstance(op, DotAttention):
        q, k = g
        sim = torch.bmm(q * op.inner_channels**-0.5, k.transpose(1, 2))  # (B', N, N)
        out = torch.bmm(_mix(sim, coefs, activations), v2)  # (B', N, D_out)
    else:
        s = op.g2(g[0].squeeze(-1))  # AvgPool(G1(f')) (B', N) -> G2 -> (B', N)
        out = _mix(s, coefs, activations).unsqueeze(-1) * v2  # (B', N, D_out)
    return out.reshape(b, t, h, w, c_op)


# The activation terms t_a of Eq. 5 (MapAttention.activate; DotAttention.activate is k_a t_a)
_TERMS = {
    "none": lambda s: s,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "softmax": lambda s: s.softmax(dim=-1),
}


def _mix(s: torch.Tensor, coefs: torch.Tensor, activations: Sequence[str]) -> torch.Tensor:
    """``Σ_a coefs[a] · t_a(s)`` over a node's activations (Eq. 5 on W)."""
    if len(set(activations)) != len(activations):  # _Mix keys its terms by activation
        return _plain_mix(s, coefs, activations)
    return _Mix.apply(s, coefs, tuple(activations))


def _plain_mix(s: torch.Tensor, coefs: torch.Tensor, activations: Sequence[str]) -> torch.Tensor:
    """``_mix`` through autograd's own derivatives (what ``_Mix`` computes, for double backward)."""
    work = s.float() if s.dtype in (torch.float16, torch.bfloat16) else s
    c = coefs.to(work.dtype)
    return sum(ca * _TERMS[a](work) for ca, a in zip(c.unbind(), activations)).to(s.dtype)


class _Mix(torch.autograd.Function):
    """``Σ_a c_a t_a(s)`` with its derivative written out.

    The same function as the sum of the terms through autograd, at a fraction of the kernels
    and buffers: the backward is one pass per term for ``s`` and one dot product per
    coefficient, where autograd's multiply-adds take four multiplications and a reduction
    each. Low-precision inputs (autocast) are mixed in float32, as autocast runs softmax, and
    the result is returned in the input's dtype. A double backward (``create_graph=True``)
    differentiates ``_plain_mix`` instead, so it is exact too.
    """

    @staticmethod
    def forward(
        ctx: Any, s: torch.Tensor, coefs: torch.Tensor, activations: tuple[str, ...]
    ) -> torch.Tensor:
        dtype = s.dtype
        work = s.float() if dtype in (torch.float16, torch.bfloat16) else s
        coef = dict(zip(activations, coefs.to(work.dtype).unbind()))
        saved: dict[str, torch.Tensor] = {}
        out: torch.Tensor | None = None
        # relu first: its fresh term becomes the sum (one N x N buffer fewer)
        for a in sorted(activations, key=("relu", "none", "sigmoid", "softmax").index):
            ca = coef[a]
            if a == "none":
                out = work * ca if out is None else out.addcmul_(work, ca)
                continue
            term = _TERMS[a](work)  # a fresh tensor
            if a != "relu":
                saved[a] = term
                out = term * ca if out is None else out.addcmul_(term, ca)
            else:
                out = term.mul_(ca) if out is None else out.addcmul_(term, ca)
        assert out is not None
        ctx.activations, ctx.dtypes = activations, (dtype, coefs.dtype)
        ctx.save_for_backward(s, coefs, work, saved.get("sigmoid"), saved.get("softmax"))
        return out.to(dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        s, coefs, work, sig, soft = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a differentiable backward
            wanted = [t for t, need in zip((s, coefs), ctx.needs_input_grad[:2]) if need]
            out = _plain_mix(s, coefs, ctx.activations)
            grads = iter(torch.autograd.grad(out, wanted, grad, create_graph=True))
            grad_s, grad_c = (next(grads) if need else None for need in ctx.needs_input_grad[:2])
            return grad_s, grad_c, None
        activations = ctx.activations
        g = grad.to(work.dtype)
        flat = g.reshape(-1)
        coef = dict(zip(activations, coefs.to(work.dtype).unbind()))
        grad_c: dict[str, torch.Tensor] = {}
        grad_s: torch.Tensor | None = None
        spare: torch.Tensor | None = None  # one buffer for the sigmoid and relu parts
        for a in sorted(activations, key=("softmax", "sigmoid", "relu", "none").index):
            ca = coef[a]
            if a == "none":
                grad_c[a] = torch.dot(flat, work.reshape(-1))
                grad_s = g * ca if grad_s is None else grad_s.addcmul_(g, ca)
                continue
            into = grad_s is not None and a != "softmax"
            if into and spare is None:
                spare = torch.empty_like(g)
            if a == "softmax":
                part = torch._softmax_backward_data(g, soft, -1, soft.dtype)
                grad_c[a] = torch.dot(flat, soft.reshape(-1))
            elif a == "sigmoid":
                if into:
                    part = torch.ops.aten.sigmoid_backward.grad_input(g, sig, grad_input=spare)
                else:
                    part = torch.ops.aten.sigmoid_backward(g, sig)
                grad_c[a] = torch.dot(flat, sig.reshape(-1))
            else:  # relu: Σ g · relu(s) = Σ (g masked to s > 0) · s
                if into:
                    part = torch.ops.aten.threshold_backward.grad_input(
                        g, work, 0, grad_input=spare
                    )
                else:
                    part = torch.ops.aten.threshold_backward(g, work, 0)
                grad_c[a] = torch.dot(part.reshape(-1), work.reshape(-1))
            grad_s = part.mul_(ca) if grad_s is None else grad_s.addcmul_(part, ca)
        assert grad_s is not None
        dtype, c_dtype = ctx.dtypes
        grad_coefs = torch.stack([grad_c[a] for a in activations]).to(c_dtype)
        return grad_s.to(dtype), grad_coefs, None
