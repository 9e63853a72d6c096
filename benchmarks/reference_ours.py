"""The reference's parametric selector, re-implemented as it computes (SYSTEM.md section 3), for
side-by-side timing and for parity checks. Our own code, written from SYSTEM.md; not used by the
library.

What it reproduces, cost included:
- the loss: per slice of 20,000 pool rows, the full slice x k similarity, divided by t, `exp` of the
  whole matrix, then the max (value and argmax) over the centroids; the loss in the reference's log
  form J = -mean_i [log e_i - log(e_i + balance * r_{c_i})] with e_i = exp(s_i / t);
- the repulsion: the k x k product `sg(u) @ u.T` (centroid slices of 20,000 columns), divided by t,
  `exp`, summed over the detached axis (dim 0), so r_b's gradient flows into u_b itself;
- autograd through all of it, with `torch.autograd.set_detect_anomaly(True)` switched on as the
  reference ships it (`anomaly=False` for the variant without it); Adam lr 1e-3, no scheduler;
- the mapping: centroids in slices of 1,000, each slice's similarities to the whole pool sorted in
  full (descending `torch.sort`), then a Python loop reading one element at a time with `.item()`
  until a sample not taken before is found. Picks returned sorted by pool position.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F

SLICE = 20000       # the reference's --slice default (pool rows and centroid columns per block)
MAP_SLICE = 1000    # centroids per block in the reference's mapping


def reference_loss(features: torch.Tensor, theta: torch.Tensor, temperature: float = 0.07,
                   balance: float = 1.0, slice_rows: int = SLICE) -> torch.Tensor:
    """The reference's loss of the unnormalised centroids `theta`, with autograd everywhere."""
    u = F.normalize(theta, dim=1)
    n, k = features.shape[0], u.shape[0]
    best, winner = [], []
    for lo in range(0, n, slice_rows):
        prod_exp = torch.exp(torch.matmul(features[lo:lo + slice_rows], u.transpose(1, 0)) / temperature)
        value, index = torch.max(prod_exp, dim=1)
        best.append(value)
        winner.append(index)
    e_best, c = torch.cat(best), torch.cat(winner)
    sums = []
    for lo in range(0, k, slice_rows):
        cent = torch.exp(torch.matmul(u.detach(), u[lo:lo + slice_rows].transpose(1, 0)) / temperature)
        sums.append(torch.sum(cent, dim=0))  # over the detached axis: r_b depends on u_b alone
    r = torch.cat(sums)
    j = torch.log(e_best) - torch.log(e_best + r[c] * balance)
    return -torch.mean(j)


def reference_optimise(features: torch.Tensor, init_indices: torch.Tensor | list[int], *,
                       max_iter: int = 300, temperature: float = 0.07, lr: float = 1e-3,
                       balance: float = 1.0, anomaly: bool = True,
                       slice_rows: int = SLICE) -> tuple[torch.Tensor, list[float]]:
    """Full-batch Adam on the centroids (copies of the init rows); returns them and the loss history.
    `anomaly`: autograd anomaly detection on, as the reference ships it (a global switch there)."""
    theta = torch.nn.Parameter(features[torch.as_tensor(init_indices)].clone())
    opt = torch.optim.Adam([theta], lr=lr)
    history: list[float] = []
    with torch.autograd.set_detect_anomaly(anomaly):
        for _ in range(max_iter):
            loss = reference_loss(features, theta, temperature, balance, slice_rows)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(loss.item())
    return theta.detach(), history


def reference_mapping(features: torch.Tensor, theta: torch.Tensor) -> list[int]:
    """In centroid order, each centroid takes its most similar sample not taken before: slices of
    1,000 centroids, a full descending sort per slice, a Python loop with `.item()` per element."""
    u = F.normalize(theta.detach(), dim=1)
    taken: set[int] = set()
    for s in range(math.ceil(u.shape[0] / MAP_SLICE)):
        sim = torch.matmul(u[s * MAP_SLICE:(s + 1) * MAP_SLICE], features.transpose(1, 0))
        _, order = torch.sort(sim, dim=1, descending=True)
        for i in range(order.shape[0]):
            for j in range(order.shape[1]):
                if order[i, j].item() not in taken:
                    taken.add(order[i, j].item())
                    break
    return sorted(taken)


def reference_select(features: torch.Tensor, init_indices: torch.Tensor | list[int],
                     **kwargs: Any) -> tuple[list[int], dict[str, Any]]:
    """Optimise then map; returns the picks (pool order) and timings, losses, final centroids."""
    t0 = time.perf_counter()
    theta, history = reference_optimise(features, init_indices, **kwargs)
    t1 = time.perf_counter()
    chosen = reference_mapping(features, theta)
    t2 = time.perf_counter()
    return chosen, {"optim_s": t1 - t0, "mapping_s": t2 - t1, "loss_history": history, "theta": theta}
