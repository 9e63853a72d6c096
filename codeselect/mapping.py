"""Matching samples and centroids by cosine/dot similarity: exact nearest centroid (once, or tracked
across the steps of an optimisation with bounds that skip most of the work), greedy unique mapping.

Both run the n x k similarity in chunks (never materialised whole) and may screen it with a bf16
matrix product (about 4x faster than fp32 on CPUs with AVX512-BF16/AMX, and on GPUs), then
re-score the few surviving candidates exactly in fp32. The screen is safe: a candidate is dropped
only when a rigorous bound on the bf16 rounding error proves it cannot win, so the results equal
those of a plain fp32 computation (ties go to the lowest index).

The fp32 greedy mapping is the reference's own computation, bit for bit (`reference_order_mapping`):
its products (slices of 1,000 centroids times the whole pool) and the order of `torch.sort` among
equal similarities (duplicate samples), which is not the lowest index. Written here because the
reference's full sort of every row costs ~10x more than a top-m list that falls back to that sort
only for the rows where the order of equal values decides a pick.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

_U = 2.0 ** -8  # unit roundoff of bfloat16 (8 significant bits)


def bf16_error_bound(dim: int) -> float:
    """Bound on |bf16 matmul entry - exact dot| / (|x| |y|): input rounding of both factors (2u),
    fp32 accumulation over `dim` terms, and rounding of the output to bf16 (u)."""
    return 3 * _U + 2 * _U * _U + dim * 2.0 ** -23


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """'auto' -> 'bf16' on GPUs and on CPUs with native bf16 matmuls, else 'fp32'."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":
        return "bf16"
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    except (AttributeError, RuntimeError):
        return "fp32"


def rowwise_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a_i, b_i> for every row, fp32 (a batched matmul: faster than multiply-and-sum on CPU)."""
    return torch.bmm(a[:, None, :], b[:, :, None]).view(-1)


def csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A sparse CSR matrix from entries given row by row (`rows` ascending); torch's beta warning
    about sparse CSR tensors is silenced."""
    crow = torch.zeros(shape[0] + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=shape[0]).cumsum(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*[Ss]parse.*")
        return torch.sparse_csr_tensor(crow, cols, values, size=shape, device=rows.device)


def pair_dots(a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """<a[rows[p]], b[cols[p]]> for every pair p, fp32, with `rows` ascending and `cols` ascending
    within a row: a sampled dense product over a CSR pattern (no gathered copy of the rows; about
    5x faster than gather-and-multiply on CPU)."""
    pattern = csr(rows, cols, torch.zeros(cols.numel(), device=a.device), (a.shape[0], b.shape[0]))
    return torch.sparse.sampled_addmm(pattern, a.float(), b.float().T, beta=0.0).values()


def nearest(x: torch.Tensor, y: torch.Tensor, *, chunk_size: int = 4096, precision: str = "auto",
            exact: bool = True, x_bf16: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For every row x_i: (max_j <x_i, y_j>, argmax_j), lowest j on ties; memory O(chunk_size * k).

    precision 'fp32' is a plain chunked fp32 product. 'bf16' screens with a bf16 product; with
    `exact` it re-scores in fp32 every j whose bf16 value is within a proven error bound of the row
    maximum (so the result equals fp32), without it it keeps the bf16 argmax (a near-tie may go to
    the runner-up) and only recomputes the winning value in fp32. `x_bf16`: x already in bf16
    (callers that query the same x every step convert it once).
    """
    precision = resolve_precision(precision, x.device)
    n, k = x.shape[0], y.shape[0]
    values = torch.empty(n, dtype=torch.float32, device=x.device)
    index = torch.empty(n, dtype=torch.long, device=x.device)
    x, y = x.float(), y.float()
    if precision == "fp32":
        yt = y.T.contiguous()
        for lo in range(0, n, chunk_size):
            torch.max(x[lo:lo + chunk_size] @ yt, dim=1, out=(values[lo:lo + chunk_size],
                                                                index[lo:lo + chunk_size]))
        return values, index
    yb = y.to(torch.bfloat16)
    ybt = yb.T  # a view: the matmul takes the transposed layout as is
    # |bf16 product - exact| <= |dx_i| |y~_j| + |x_i| |dy_j| + d 2^-24 |x~_i| |y~_j| before the
    # output is rounded; rounding is monotone, so it only adds half an ulp of the row maximum.
    yb_norm = float(yb.float().norm(dim=1).max()) if k else 0.0
    dy_norm = float((yb.float() - y).norm(dim=1).max()) if k else 0.0
    acc = x.shape[1] * 2.0 ** -24
    for lo in range(0, n, chunk_size):
        xc = x[lo:lo + chunk_size]
        xcb = xc.to(torch.bfloat16) if x_bf16 is None else x_bf16[lo:lo + chunk_size]
        screen = xcb @ ybt
        top, arg = screen.max(dim=1)
        if not exact:
            index[lo:lo + xc.shape[0]] = arg
            values[lo:lo + xc.shape[0]] = pair_dots(xc, y, torch.arange(xc.shape[0], device=x.device), arg)
            continue
        xcb32 = xcb.float()
        eps = ((xcb32 - xc).norm(dim=1) * yb_norm + xc.norm(dim=1) * dy_norm
               + acc * xcb32.norm(dim=1) * yb_norm)
        top = top.float()
        thr = (top - (_U + 1e-6) * top.abs() - 2 * eps - 1e-6).to(torch.bfloat16)
        rows, cols = (screen >= thr[:, None]).nonzero(as_tuple=True)
        exact_vals = pair_dots(xc, y, rows, cols)  # row-major order, as the CSR pattern needs
        m = xc.shape[0]
        best = torch.full((m,), -torch.inf, device=x.device).scatter_reduce_(0, rows, exact_vals, "amax")
        win = exact_vals == best[rows]
        arg = torch.full((m,), k, dtype=torch.long, device=x.device)
        arg.scatter_reduce_(0, rows[win], cols[win], "amin")
        values[lo:lo + m] = best
        index[lo:lo + m] = arg
    return values, index


class NearestTracker:
    """The exact nearest y row of every x row (value and index, lowest index on ties), for a y that
    moves a little between calls (the centroids of successive optimisation steps); x stays fixed.

    Each row keeps `candidates` centroids and an upper bound on the similarity of every other one.
    A call re-scores the candidates exactly in fp32 (a sampled product, O(n m d)) and raises every
    bound by the largest centroid move since the last call (|<x, y'> - <x, y>| <= |x| |y' - y|,
    Hamerly-style). A row whose best candidate beats its bound keeps that winner, exactly; the
    others are screened again against all k centroids (bf16 or fp32 product, top m+1: the m best
    become the candidates, the (m+1)-th plus the screen's proven error bound the new bound). A row
    that even a fresh screen cannot certify (a near-tie reaching past its m-th candidate) is
    computed densely in fp32 and screened again at the next call. So every call returns what a
    plain fp32 `nearest` returns, at the cost of re-screening the rows near a boundary.
    Written here because no library keeps such bounds for a moving maximum-inner-product query.
    """

    def __init__(self, x: torch.Tensor, *, candidates: int = 32, chunk_size: int = 4096,
                 precision: str = "auto", x_bf16: torch.Tensor | None = None) -> None:
        self.x = x.float()
        self.precision = resolve_precision(precision, x.device)
        self.x_bf16 = None
        if self.precision == "bf16":
            self.x_bf16 = self.x.to(torch.bfloat16) if x_bf16 is None else x_bf16
        self.m, self.chunk_size = int(candidates), int(chunk_size)
        self.x_norm = self.x.norm(dim=1)
        if self.x_bf16 is not None:
            xb32 = self.x_bf16.float()
            self.dx_norm = (xb32 - self.x).norm(dim=1)
            self.xb_norm = xb32.norm(dim=1)
        self._y: torch.Tensor | None = None
        self.cand = self.bound = None
        self.stats: dict[str, int] = {"calls": 0, "rescreened": 0, "dense": 0}

    def _screen(self, rows: torch.Tensor, y: torch.Tensor, m: int) -> None:
        """Fresh candidates and bounds for `rows` against all of y."""
        k = y.shape[0]
        acc = self.x.shape[1] * 2.0 ** -23  # fp32 accumulation of the screen and of the re-score
        if self.precision == "bf16":
            yb = y.to(torch.bfloat16)
            ybt, yb32 = yb.T, yb.float()
            yb_norm = float(yb32.norm(dim=1).max())
            dy_norm = float((yb32 - y).norm(dim=1).max())
        else:
            ybt = y.T
            y_norm = float(y.norm(dim=1).max())
        whole = rows.numel() == self.x.shape[0]
        for lo in range(0, rows.numel(), self.chunk_size):
            r = rows[lo:lo + self.chunk_size]
            src = self.x_bf16 if self.precision == "bf16" else self.x
            block = src[lo:lo + self.chunk_size] if whole else src.index_select(0, r)
            screen = block @ ybt
            if self.precision == "bf16":
                # as in `nearest`: input rounding of both factors, accumulation, output rounding
                slack = (self.dx_norm[r] * yb_norm + self.x_norm[r] * dy_norm
                         + (acc + _U) * self.xb_norm[r] * yb_norm)
            else:
                slack = acc * self.x_norm[r] * y_norm
            if m < k:
                vals, idx = screen.topk(m + 1, dim=1)
                self.bound[r] = vals[:, m].float() + slack + 1e-6
                self.cand[r] = idx[:, :m].sort(dim=1).values
            else:
                self.bound[r] = -torch.inf
                self.cand[r] = torch.arange(k, device=y.device).expand(r.numel(), k)

    def _rescore(self, rows: torch.Tensor | None, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(best candidate similarity, its index) for `rows` (None: all), exact fp32."""
        cand = self.cand if rows is None else self.cand.index_select(0, rows)
        x = self.x if rows is None else self.x.index_select(0, rows)
        count, m = cand.shape
        pair_rows = torch.arange(count, device=y.device).repeat_interleave(m)
        vals = pair_dots(x, y, pair_rows, cand.reshape(-1)).view(-1, m)
        best, arg = vals.max(dim=1)  # the first maximum: candidates are in index order
        return best, cand.gather(1, arg[:, None]).squeeze(1)

    @torch.no_grad()
    def __call__(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = y.float()
        n, k = self.x.shape[0], y.shape[0]
        m = max(1, min(self.m, k))
        self.stats["calls"] += 1
        everything = torch.arange(n, device=y.device)
        if self._y is None or self._y.shape != y.shape or self.cand.shape[1] != m:
            self.cand = torch.empty(n, m, dtype=torch.long, device=y.device)
            self.bound = torch.empty(n, dtype=torch.float32, device=y.device)
            self._screen(everything, y, m)
            self.stats["rescreened"] += n
        else:
            move = float((y - self._y).norm(dim=1).max())
            self.bound += move * float(self.x_norm.max()) * (1 + 1e-5) + 1e-7
        self._y = y  # callers pass a fresh tensor each step (a normalised copy) and do not modify it
        best, index = self._rescore(None, y)
        stale = (~(best > self.bound)).nonzero().squeeze(1)  # also catches NaN
        if stale.numel():
            self._screen(stale, y, m)
            self.stats["rescreened"] += stale.numel()
            best[stale], index[stale] = self._rescore(stale, y)
            dense = stale[~(best[stale] > self.bound[stale])]
            if dense.numel():  # near-ties past the m-th candidate: plain fp32, screened again next call
                self.stats["dense"] += dense.numel()
                v, i = nearest(self.x.index_select(0, dense), y, precision="fp32", chunk_size=self.chunk_size)
                best[dense], index[dense] = v, i
                self.bound[dense] = torch.inf
        return best, index


def _candidates(x: torch.Tensor, y: torch.Tensor, m: int, chunk_size: int,
                x_bf16: torch.Tensor | None = None) -> tuple[list[list[int]], list[list[float]], list[float]]:
    """Per centroid y_j: its top-m samples sorted by exact similarity (ties: lower index first) and
    a threshold above which a candidate provably beats every non-candidate.

    With `x_bf16` the top-m come from a bf16 screen, re-scored exactly in fp32 (the threshold adds
    the screen's error bound); without it, from a plain fp32 product."""
    n, k = x.shape[0], y.shape[0]
    xt = x.T if x_bf16 is None else x_bf16.T  # a view: the matmul takes it as is
    slack = 0.0 if x_bf16 is None else bf16_error_bound(x.shape[1]) * float(x.norm(dim=1).max())
    idx_out: list[list[int]] = []
    val_out: list[list[float]] = []
    thr_out: list[float] = []
    for lo in range(0, k, chunk_size):
        yc = y[lo:lo + chunk_size]
        sim = (yc.to(xt.dtype) @ xt)
        vals, idx = sim.topk(m, dim=1)
        idx, perm = idx.sort(dim=1)  # ties in exact value -> lower index first (stable sort below)
        if x_bf16 is not None:
            rows = torch.arange(yc.shape[0], device=y.device).repeat_interleave(m)
            exact = pair_dots(yc, x, rows, idx.reshape(-1)).view(-1, m)
            thr = vals[:, -1].float() + slack * yc.norm(dim=1)
        else:
            exact, thr = vals.gather(1, perm), vals[:, -1].clone()
        if m == n:  # the list is complete: every candidate is certified
            thr.fill_(-torch.inf)
        exact, perm = exact.sort(dim=1, descending=True, stable=True)
        idx = idx.gather(1, perm)
        idx_out += idx.tolist()
        val_out += exact.tolist()
        thr_out += thr.tolist()
    return idx_out, val_out, thr_out


def _screen(x_bf16: torch.Tensor | None, m: int) -> torch.Tensor | None:
    """The bf16 screen for lists of length m; very long lists are cheaper from a plain fp32 product
    than from a screen whose every candidate is then re-scored."""
    return x_bf16 if m <= 4096 else None


def auto_candidates(n: int, k: int) -> int:
    """Top-m list length: short when few samples get taken (cheap candidate pass), longer when most of
    the pool ends up taken and short lists would often be exhausted (each exhaustion costs a pass)."""
    return 8 if 4 * k <= n else 32


def _walk(cand_idx: list[list[int]], cand_val: list[list[float]], thr: list[float],
          n: int) -> tuple[list[int], list[int]]:
    """The greedy walk over the candidate lists: (picks, centroids whose certified candidates ran out).

    A centroid takes its first untaken candidate when that one is certified (its exact similarity
    beats every sample outside the list). Otherwise the walk goes on with a guess (the first
    untaken candidate, or nothing), so one pass finds every list that may need to be longer."""
    taken = bytearray(n)
    chosen: list[int] = []
    short: list[int] = []
    for j, (idx, val) in enumerate(zip(cand_idx, cand_val)):
        pick = -1
        for i, v in zip(idx, val):
            if not taken[i]:
                pick = i
                if not v > thr[j]:
                    short.append(j)
                break
        else:
            short.append(j)
        if pick >= 0:
            taken[pick] = 1
        chosen.append(pick)
    return chosen, short


REFERENCE_SLICE = 1000  # centroids per block in the reference's mapping (its products, bit for bit)


def reference_order_mapping(x: torch.Tensor, y: torch.Tensor, *, candidates: int = 32,
                            slice_size: int = REFERENCE_SLICE) -> tuple[list[int], dict]:
    """The reference's mapping, same picks: centroids in slices of `slice_size`, each slice's fp32
    similarities `y[slice] @ x.T`, and in centroid order the first sample of the row's descending
    `torch.sort` that no earlier centroid took.

    A row is walked through its top-(m+1) (`topk`); when those values are all distinct they are
    the sort's first m+1 entries in the sort's order, so the first untaken one among the first m
    is the sort's pick. A row with equal values among them (duplicate samples), or whose m
    candidates are all taken, is sorted in full with `torch.sort` as the reference sorts it (a
    row sorted alone comes out as in the batched sort). Returns the picks in centroid order and
    stats (`sorted_rows`)."""
    n, k = x.shape[0], y.shape[0]
    x, y = x.float(), y.float()
    xt = x.transpose(1, 0)  # as the reference: a transposed view, no copy
    m = max(1, min(int(candidates), n))
    fetch = min(m + 1, n)
    taken = bytearray(n)
    taken_np = np.frombuffer(taken, dtype=np.uint8)  # the same buffer, for the full-sort rows
    chosen: list[int] = []
    sorted_rows = 0
    for lo in range(0, k, slice_size):
        sim = torch.matmul(y[lo:lo + slice_size], xt)
        vals, idx = sim.topk(fetch, dim=1)
        distinct = (vals[:, 1:] != vals[:, :-1]).all(dim=1).tolist()
        idx_rows = idx[:, :m].tolist()
        for r, (ok, cand) in enumerate(zip(distinct, idx_rows)):
            pick = -1
            if ok:
                for i in cand:
                    if not taken[i]:
                        pick = i
                        break
            if pick < 0:
                sorted_rows += 1
                order = torch.sort(sim[r], descending=True).indices.numpy()
                pick = int(order[np.argmax(taken_np[order] == 0)])
            taken[pick] = 1
            chosen.append(pick)
    return chosen, {"sorted_rows": sorted_rows, "candidates": m, "slice": slice_size}


def greedy_unique_mapping(x: torch.Tensor, y: torch.Tensor, *, candidates: int | None = None,
                          chunk_size: int = 512, precision: str = "auto",
                          x_bf16: torch.Tensor | None = None) -> tuple[list[int], dict]:
    """In order j = 0..k-1, centroid y_j takes its most similar row of x that no earlier centroid
    took. Same result as sorting all n similarities per centroid.

    precision fp32: the reference's computation exactly (`reference_order_mapping`: its products,
    its sort's order among equal similarities). bf16: each centroid gets its top-`candidates`
    samples from a bf16 screen re-scored in fp32 (ties: lowest index), in one chunked pass, and the
    greedy walk uses them. Centroids whose certified candidates ran out (many centroids in one
    dense region) get lists 16x longer, all in one batched pass, and the walk restarts; a list of
    all n samples is always certified, so this ends; `chunk_size` centroids per pass (fp32 keeps the
    reference's slices of 1,000). Returns the k distinct indices and stats (`refilled`: lists
    lengthened, `rounds`). `x_bf16`: x already in bf16 (a caller that converted it once).
    """
    n, k = x.shape[0], y.shape[0]
    if k > n:
        raise ValueError(f"cannot map {k} centroids to {n} distinct samples")
    precision = resolve_precision(precision, x.device)
    if precision == "fp32":
        chosen, stats = reference_order_mapping(x, y, candidates=candidates or 32)
        return chosen, {**stats, "precision": precision}
    x, y = x.float(), y.float()
    m = max(1, min(int(candidates or auto_candidates(n, k)), n))
    x_bf16 = x.to(torch.bfloat16) if x_bf16 is None else x_bf16
    cand_idx, cand_val, thr = _candidates(x, y, m, chunk_size, _screen(x_bf16, m))
    depth = [m] * k
    refilled, rounds = 0, 0
    while True:
        chosen, short = _walk(cand_idx, cand_val, thr, n)
        if not short:
            break
        rounds += 1
        refilled += len(short)
        longer = min(n, 16 * max(depth[j] for j in short))
        rows = torch.tensor(short, dtype=torch.long, device=y.device)
        idx, val, th = _candidates(x, y.index_select(0, rows), longer, chunk_size, _screen(x_bf16, longer))
        for r, j in enumerate(short):
            cand_idx[j], cand_val[j], thr[j], depth[j] = idx[r], val[r], th[r], longer
    return chosen, {"refilled": refilled, "rounds": rounds, "candidates": m, "precision": precision}
