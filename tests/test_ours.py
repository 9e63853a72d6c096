"""The parametric selector: loss and gradient, exact argmax, greedy mapping, determinism, sharding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from codeselect.errors import UserError
from codeselect.mapping import greedy_unique_mapping, nearest
from codeselect.selectors.base import SelectionContext
from codeselect.selectors.ours import (Objective, ParametricSelector, init_indices,
                                       optimise_centroids, parametric_loss)


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def dense_loss(x: torch.Tensor, theta: torch.Tensor, t: float, balance: float) -> torch.Tensor:
    """SYSTEM.md section 3 written literally (float64, dense, autograd through the max)."""
    th = F.normalize(theta, dim=1)
    s, c = (x @ th.T).max(dim=1)
    r = torch.exp(th.detach() @ th.T / t).sum(dim=1)
    return -(s / t - torch.log(torch.exp(s / t) + balance * r[c])).mean()


def brute_greedy(x: np.ndarray, y: np.ndarray) -> list[int]:
    sim = x @ y.T
    taken: set[int] = set()
    out = []
    for j in range(y.shape[0]):
        for i in sorted(range(x.shape[0]), key=lambda i: (-sim[i, j], i)):
            if i not in taken:
                taken.add(i)
                out.append(i)
                break
    return out


@pytest.mark.parametrize("precision,exact", [("fp32", True), ("bf16", True), ("bf16", False)])
@pytest.mark.parametrize("balance", [1.0, 0.25])
def test_loss_and_gradient_match_dense_autograd(precision: str, exact: bool, balance: float) -> None:
    x = unit(200, 16, seed=1)
    theta0 = x[:12] + 0.2 * unit(12, 16, seed=2)
    ref_theta = theta0.double().requires_grad_()
    ref = dense_loss(x.double(), ref_theta, 0.07, balance)
    ref.backward()
    theta = theta0.clone().requires_grad_()
    ours = parametric_loss(theta, Objective(x, temperature=0.07, balance=balance, scale=1 / 200,
                                            precision=precision, exact_argmax=exact))
    ours.backward()
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)
    if precision == "fp32":
        torch.testing.assert_close(theta.grad.double(), ref_theta.grad, rtol=1e-4, atol=1e-6)
    else:  # bf16 k x k products: the diagonal is exact, the rest carries bf16 rounding
        err = float((theta.grad.double() - ref_theta.grad).norm() / ref_theta.grad.norm())
        assert err < 0.02


def test_loss_is_stable_at_low_temperature() -> None:
    """exp(s/t) overflows float32 at t = 0.01; the softplus form stays finite and correct."""
    x = unit(100, 8, seed=3)
    theta0 = x[:10] + 0.1 * unit(10, 8, seed=4)
    naive = dense_loss(x, theta0, 0.01, 1.0)
    assert not torch.isfinite(naive)
    ref = dense_loss(x.double(), theta0.double(), 0.01, 1.0)
    ours = parametric_loss(theta0, Objective(x, temperature=0.01, scale=1 / 100, precision="fp32"))
    assert torch.isfinite(ours) and float(ours) == pytest.approx(float(ref), rel=1e-5)


def test_bf16_exact_argmax_equals_fp32_on_near_ties() -> None:
    x = unit(3000, 64, seed=5)
    base = unit(50, 64, seed=6)
    y = F.normalize(torch.cat([base, base + 1e-3 * unit(50, 64, seed=7)]), dim=1)  # near-duplicates
    v32, i32 = nearest(x, y, precision="fp32", chunk_size=700)
    v16, i16 = nearest(x, y, precision="bf16", exact=True, chunk_size=700)
    full = (x.double() @ y.double().T)
    assert torch.equal(i16, full.argmax(dim=1)) and torch.equal(i32, i16)
    torch.testing.assert_close(v16.double(), full.max(dim=1).values, rtol=0, atol=1e-6)
    vf, i_fast = nearest(x, y, precision="bf16", exact=False)
    # the fast screen may pick a near-tie, but its value is the exact similarity of its pick
    torch.testing.assert_close(vf.double(), full.gather(1, i_fast[:, None]).squeeze(1), rtol=0, atol=1e-6)
    assert float((v32 - vf).max()) < 0.02


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("case", ["spread", "collisions", "identical"])
def test_mapping_matches_brute_force_greedy(precision: str, case: str) -> None:
    x = unit(300, 12, seed=8)
    if case == "spread":
        y = unit(60, 12, seed=9)
    elif case == "collisions":  # 80 centroids around 4 points: their top candidates collide
        y = F.normalize(x[:4].repeat(20, 1) + 0.05 * unit(80, 12, seed=10), dim=1)
    else:
        y = x[7].repeat(40, 1)
    got, stats = greedy_unique_mapping(x, y, candidates=3, chunk_size=16, precision=precision)
    assert got == brute_greedy(x.double().numpy(), y.double().numpy())
    assert len(set(got)) == y.shape[0]
    if case != "spread":
        assert stats["refilled"] > 0  # the longer-list path was exercised


def test_mapping_uses_every_sample_when_k_equals_n() -> None:
    x = unit(40, 6, seed=11)
    got, _ = greedy_unique_mapping(x, unit(40, 6, seed=12), candidates=4)
    assert sorted(got) == list(range(40))


def test_sharded_objective_equals_single_process() -> None:
    """DDP path: each rank sees a shard and scale world/n; DDP averages gradients."""
    x = unit(301, 16, seed=13)
    theta0 = x[:20] + 0.1 * unit(20, 16, seed=14)
    single = theta0.clone().requires_grad_()
    loss = parametric_loss(single, Objective(x, scale=1 / 301, precision="fp32"))
    loss.backward()
    world = 3
    grads, losses = [], []
    for shard in torch.tensor_split(x, world):
        th = theta0.clone().requires_grad_()
        part = parametric_loss(th, Objective(shard, scale=world / 301, precision="fp32"))
        part.backward()
        grads.append(th.grad)
        losses.append(float(part))
    assert np.mean(losses) == pytest.approx(float(loss), rel=1e-6)  # the reported (mean-reduced) loss
    torch.testing.assert_close(torch.stack(grads).mean(0), single.grad, rtol=1e-5, atol=1e-7)


def test_lightning_run_equals_plain_adam_loop() -> None:
    x = unit(150, 8, seed=15)
    init = init_indices(x, 10, seed=0)
    theta, history = optimise_centroids(x, x[init], max_iter=5, lr=1e-2, precision="fp32")
    ref = x[init].clone().double().requires_grad_()
    opt = torch.optim.Adam([ref], lr=1e-2)
    ref_hist = []
    for _ in range(5):
        loss = dense_loss(x.double(), ref, 0.07, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ref_hist.append(float(loss))
    assert history == pytest.approx(ref_hist, rel=1e-5)
    torch.testing.assert_close(theta.double(), ref.detach(), rtol=1e-4, atol=1e-5)


def _ctx(x: torch.Tensor, seed: int) -> SelectionContext:
    return SelectionContext(records=[{"id": i} for i in range(x.shape[0])], embeddings=x, seed=seed)


def test_selector_is_deterministic_distinct_and_reports() -> None:
    x = unit(400, 16, seed=16)
    sel = ParametricSelector(max_iter=4, progress=False)
    a_ctx, b_ctx, c_ctx = _ctx(x, 1), _ctx(x, 1), _ctx(x, 2)
    a, b, c = sel.select(a_ctx, 50), sel.select(b_ctx, 50), sel.select(c_ctx, 50)
    assert a == b and a != c
    assert len(a) == 50 and len(set(a)) == 50 and all(0 <= i < 400 for i in a)
    info = a_ctx.info
    assert len(info["loss_history"]) == info["steps"] == 4
    assert info["final_loss"] == info["loss_history"][-1]
    assert info["optimisation_s"] >= 0 and info["mapping_s"] >= 0


def test_fps_init_is_farthest_point() -> None:
    x = unit(120, 5, seed=17)
    got = init_indices(x, 8, seed=3, init="fps").tolist()
    first = int(torch.randint(120, (1,), generator=torch.Generator().manual_seed(3)))
    ref = [first]
    d = (x.double() - x[first].double()).norm(dim=1)
    for _ in range(7):
        ref.append(int(d.argmax()))
        d = torch.minimum(d, (x.double() - x[ref[-1]].double()).norm(dim=1))
    assert got == ref
    picks = ParametricSelector(max_iter=2, init="fps", progress=False).select(_ctx(x, 3), 8)
    assert len(set(picks)) == 8


@pytest.mark.parametrize("kwargs,key", [({"temperature": 0}, "selector.temperature"),
                                        ({"init": "kmeans"}, "selector.init"),
                                        ({"balance": -1}, "selector.balance")])
def test_bad_hyperparameters_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(UserError, match=key):
        ParametricSelector(**kwargs)


def test_sample_num_larger_than_pool_is_a_user_error() -> None:
    with pytest.raises(UserError, match="sample_num"):
        ParametricSelector(max_iter=1, progress=False).select(_ctx(unit(10, 4), 0), 11)


@pytest.mark.slow
def test_ddp_spawn_two_cpu_ranks_equals_single_process() -> None:
    x = unit(257, 8, seed=18)
    init = init_indices(x, 16, seed=0)
    single, hist1 = optimise_centroids(x, x[init], max_iter=3, precision="fp32")
    ddp, hist2 = optimise_centroids(x, x[init], max_iter=3, precision="fp32",
                                    devices=2, strategy="ddp_spawn")
    torch.testing.assert_close(ddp, single, rtol=1e-5, atol=1e-6)
