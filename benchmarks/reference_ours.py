"""A plain re-implementation of the reference's parametric selector, for side-by-side timing.

Written from SYSTEM.md section 3, the way the reference computes it: the dense n x k similarity
every step with autograd through the max, the k x k repulsion with one side detached, and the
mapping by a full per-centroid sort walked in a Python loop. Not used by the library.
"""
from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F


def reference_loss(features: torch.Tensor, theta: torch.Tensor, temperature: float,
                   balance: float) -> torch.Tensor:
    """J = -mean_i [s_i/t - log(exp(s_i/t) + balance * r_{c_i})], dense, autograd everywhere."""
    th = F.normalize(theta, dim=1)
    sim = features @ th.T                                     # n x k
    s, c = sim.max(dim=1)
    r = torch.exp(th.detach() @ th.T / temperature).sum(dim=1)  # gradient into the column side only
    return -(s / temperature - torch.log(torch.exp(s / temperature) + balance * r[c])).mean()


def reference_optimise(features: torch.Tensor, init_indices: torch.Tensor, *, max_iter: int = 300,
                       temperature: float = 0.07, lr: float = 1e-3,
                       balance: float = 1.0) -> tuple[torch.Tensor, list[float]]:
    """Full-batch Adam on the centroids; returns the final centroids and the loss history."""
    theta = torch.nn.Parameter(features[init_indices].clone())
    opt = torch.optim.Adam([theta], lr=lr)
    history: list[float] = []
    for _ in range(max_iter):
        loss = reference_loss(features, theta, temperature, balance)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return theta.detach(), history


def reference_mapping(features: torch.Tensor, theta: torch.Tensor) -> list[int]:
    """In centroid order, each centroid takes its most similar sample not taken before (full sort)."""
    sim = features @ F.normalize(theta, dim=1).T              # n x k
    taken: set[int] = set()
    chosen: list[int] = []
    for j in range(sim.shape[1]):
        order = torch.argsort(sim[:, j], descending=True)
        for i in order.tolist():
            if i not in taken:
                taken.add(i)
                chosen.append(i)
                break
    return chosen


def reference_select(features: torch.Tensor, init_indices: torch.Tensor,
                     **kwargs: Any) -> tuple[list[int], dict[str, Any]]:
    """Optimise then map; returns the indices and timings/losses."""
    t0 = time.perf_counter()
    theta, history = reference_optimise(features, init_indices, **kwargs)
    t1 = time.perf_counter()
    chosen = reference_mapping(features, theta)
    t2 = time.perf_counter()
    return chosen, {"optim_s": t1 - t0, "mapping_s": t2 - t1, "loss_history": history,
                    "theta": theta}
