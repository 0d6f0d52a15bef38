"""Multiply-accumulate counts of the BAT and RSA ops, and their papers' complexity formulas.

Convention: every function here returns multiply-accumulates (MACs) per sample, which is what
the BAT paper's Table 1 calls "FLOPs". ``torch.utils.flop_counter.FlopCounterMode`` (the
project's FLOP counter) counts 2 FLOPs per MAC and counts only matrix products and convolutions
(``einsum`` lowers to ``bmm`` and is counted), never BatchNorm, ReLU, pooling, softmax,
normalisations or bias additions; the counts below leave out the same things, so
``FlopCounterMode`` total == 2 · batch · MACs exactly.

BAT paper Table 1 (2D BAT-Block, C block channels reduced to C/2, C' predictor channels, s_h =
s_w = s, per image)::

    5/4 C²HW + 1/2 CHW(H+W) + 1/2 CC'HW + 2C'ks³

term by term, in the authors' block (which is ours, ``BATBlock`` with r = 2, tk = 0):

- 5/4 C²HW: ``conv1`` C -> C/2 (1/2), ``conv2`` C/2 -> C (1/2), ``batransform.conv2`` C/2 -> C/2
  (1/4), all 1×1 per position;
- 1/2 CHW(H+W): the bilinear transform P·X·Q on C/2 channels with dense H×H and W×W matrices
  (P·X: H MACs per output element, X·Q: W). The block-based form (Sec. 3.3) applies
  kron(P, I_{H/s}), which has s non-zeros per row, so it costs 1/2 CHW(2s); the two agree when
  s = H = W (block size 1). ``bat_transform_macs`` counts the block-based form;
- 1/2 CC'HW: the predictor's ``batransform.conv1`` C/2 -> C' (in the authors' code C' = k);
- 2C'ks³: ``conv_p`` and ``conv_q``, each C' -> s²k channels with an s-long kernel, applied once
  (per frame) to the row- or column-pooled features.

The video block adds, per clip of T frames, T times the above plus the temporal transform:
``conv_t`` (k -> ts²·tk, kernel ts: k·tk·ts³) and the product with kron(T, I_{T/ts})
(C/2 · THW · ts).

RSA paper Table 1 gives orders only: efficient RSA O(BNMC²) time, multi-query O(BNMC²/L²).
In our efficient form (``attnas.blocks.RSA``) the terms that grow with the context size M are
exactly three depthwise convolutions per position: X^K ⊛ r(H1) (dk·dd·M), H2ᵀX^V (dv·dd·M) and
(X^V)ᵀG (dv·dv·M); with the authors' setting dk = dv = dd = D = C/L they sum to 3·M·C²/L², the
table's O(BNMC²/L²) term with constant 3. The other terms do not depend on M: the q/k/v
projection d_in·(L·dk + dk + dv), the query–correlation product L·dk·dd, the relational
context product dv·dv·dd and the output L·dd·dv.
"""

from __future__ import annotations

import math


def bat_table1_macs(c: int, c_pred: int, h: int, w: int, s: int, k: int) -> float:
    """BAT paper Table 1, BAT-Block FLOPs (MACs) for one H×W map with C block channels.

    Args:
        c: C, the block's input/output channels (reduced to C/2 inside).
        c_pred: C', the predictor channels.
        h, w: spatial size.
        s: block count of P and Q.
        k: channel groups.
    """
    return (
        5 / 4 * c * c * h * w
        + 1 / 2 * c * h * w * (h + w)
        + 1 / 2 * c * c_pred * h * w
        + 2 * c_pred * k * s**3
    )


def bat_transform_macs(
    c: int, t: int, h: int, w: int, s: int, ts: int, k: int, tk: int, dim: str
) -> int:
    """MACs of ``BATransform(c, s, ts, k, tk, dim)`` on one ``(c, t, h, w)`` sample."""
    positions = t * h * w
    macs = c * k * positions  # predictor CBR c -> k
    if dim in ("spatial", "spatiotemporal"):
        macs += 2 * k * (s * s * k) * s * t  # conv_p, conv_q per frame
        macs += 2 * c * positions * s  # kron(P, I)·u and u·kron(Q, I)
    if dim in ("temporal", "spatiotemporal"):
        macs += k * (ts * ts * tk) * ts  # conv_t, once per clip
        macs += c * positions * ts  # kron(T, I) along time
    return macs + c * c * positions  # closing CBR c -> c


def bat_block_macs(
    c: int, t: int, h: int, w: int, r: int = 2, s: int = 7, ts: int = 4, k: int = 4, tk: int = 1
) -> int:
    """MACs of the authors' ``BATBlock(c, r, s, ts, k, tk)`` on one ``(c, t, h, w)`` sample."""
    inner = c // r
    dim = "spatiotemporal" if tk > 0 else "spatial"
    core = bat_transform_macs(inner, t, h, w, s, ts, k, tk, dim)
    return 2 * c * inner * t * h * w + core


def rsa_macs_per_position(
    d_in: int,
    nh: int,
    dk: int,
    dv: int,
    dd: int,
    kernel_size: tuple[int, int, int],
    kernel_type: str = "VplusR",
    feat_type: str = "VplusR",
) -> int:
    """MACs per output position of ``attnas.blocks.RSA`` (stride 1) with resolved dk, dv, dd."""
    m = math.prod(kernel_size)
    relational_kernel = kernel_type != "V"
    macs = d_in * (nh * dk + (dk if relational_kernel else 0) + dv)  # q/k/v projection
    if relational_kernel:
        macs += dk * dd * m  # X^K ⊛ r(H1)
        macs += nh * dk * dd  # q̂ · (X^K ⊛ r(H1) [+ P1])
    macs += dv * dd * m  # H2ᵀ X^V
    if feat_type != "V":
        macs += dv * dv * m  # (X^V)ᵀ G
        macs += dv * dv * dd  # ((X^V)ᵀG [+ I])ᵀ F_V
    return macs + nh * dd * dv  # κ · F


def rsa_table1_context_macs(c: int, num_queries: int, m: int) -> int:
    """The M-dependent MACs per position of multi-query efficient RSA, 3·M·C²/L².

    RSA paper Table 1's O(BNMC²/L²) (per position, B = N = 1) for the authors' setting
    d_in = d_out = C, L queries, dk = dv = dd = C/L, relational kernel and context.
    """
    d = c // num_queries
    return 3 * m * d * d
