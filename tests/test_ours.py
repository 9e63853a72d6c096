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
    """SYSTEM.md section 3 written literally (dense, autograd through the max).

    r_b = sum_a exp(<sg(u_a), u_b>/t): in M = sg(u) @ u.T, M[a, b] = <sg(u_a), u_b>, so r sums M over
    its first (detached) axis and the gradient of r_b reaches u_b itself.
    """
    u = F.normalize(theta, dim=1)
    s, c = (x @ u.T).max(dim=1)
    r = torch.exp(u.detach() @ u.T / t).sum(dim=0)
    return -(s / t - torch.log(torch.exp(s / t) + balance * r[c])).mean()


def test_repulsion_gradient_flows_into_the_winning_centroid() -> None:
    """A hand-made case: one sample, two centroids. Only centroid 0 wins, so only r_0 is in the
    loss; its gradient (the repulsion part) must land on centroid 0, and centroid 1 gets none."""
    t = 0.5
    x = F.normalize(torch.tensor([[1.0, 0.2, 0.0]]), dim=1)
    theta0 = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]]), dim=1)
    theta = theta0.clone().requires_grad_()
    parametric_loss(theta, Objective(x, temperature=t, balance=1.0, scale=1.0, precision="fp32")).backward()
    assert float(theta.grad[1].abs().max()) == 0.0  # centroid 1 wins nothing and sums r_0 detached
    # by hand, w.r.t. u_0 (unit): dJ/du_0 = p (sum_a E_a0 u_a / (t r_0) - x / t), then project
    u = theta0.double()
    e = torch.exp(u @ u[0] / t)
    s = float(x.double()[0] @ u[0])
    p = torch.sigmoid(torch.log(e.sum()) - torch.tensor(s / t))
    g = p * ((e[:, None] * u).sum(0) / (t * e.sum()) - x.double()[0] / t)
    g = g - (g @ u[0]) * u[0]  # the row normalisation's Jacobian at a unit vector
    torch.testing.assert_close(theta.grad[0].double(), g, rtol=1e-5, atol=1e-7)


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


# The fast bf16 screen (exact=False) may pick a near-tie winner, which clustered centroids are full
# of; its loss is then not the exact argmax's, so it is checked on spread centroids only.
@pytest.mark.parametrize("geometry,precision,exact", [
    ("spread", "fp32", True), ("spread", "bf16", True), ("spread", "bf16", False),
    ("clustered", "fp32", True), ("clustered", "bf16", True)])
@pytest.mark.parametrize("balance", [1.0, 0.25])
def test_loss_and_gradient_match_dense_autograd(geometry: str, precision: str, exact: bool,
                                                balance: float) -> None:
    """Clustered (mutual cosines ~0.8, like real text embeddings): there the repulsion's off-diagonal
    terms matter, and a gradient sent into the other centroids is ~85% off (far beyond bf16's bound)."""
    if geometry == "spread":
        x = unit(200, 16, seed=1)
        theta0 = x[:12] + 0.2 * unit(12, 16, seed=2)
    else:
        x = F.normalize(unit(1, 32, seed=5) + 0.5 * unit(200, 32, seed=1), dim=1)
        theta0 = x[:40] + 0.05 * unit(40, 32, seed=2)
    ref_theta = theta0.double().requires_grad_()
    ref = dense_loss(x.double(), ref_theta, 0.07, balance)
    ref.backward()
    theta = theta0.clone().requires_grad_()
    ours = parametric_loss(theta, Objective(x, temperature=0.07, balance=balance, scale=1 / 200,
                                            precision=precision, exact_argmax=exact))
    ours.backward()
    # bf16 k x k logits of clustered centroids carry ~1% rounding per entry: the loss within 1e-3
    loss_rel = 1e-3 if precision == "bf16" and geometry == "clustered" else 1e-5
    assert float(ours.detach()) == pytest.approx(float(ref), rel=loss_rel)
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


def _reference_draw(n: int, k: int, seed: int) -> list[int]:
    """SYSTEM.md section 3's init, made with the module-level calls the reference makes."""
    import random

    saved = random.getstate()
    try:
        random.seed(seed)
        return random.sample(range(n), k)
    finally:
        random.setstate(saved)


def test_init_is_the_references_draw_and_leaves_global_rng_alone() -> None:
    import random

    x = unit(500, 8, seed=20)
    random.seed(123)
    before = random.random()
    random.seed(123)
    got = init_indices(x, 37, seed=42).tolist()
    assert random.random() == before  # global state untouched
    assert got == _reference_draw(500, 37, 42)  # centroid j starts at the j-th draw


def test_zero_steps_select_the_init_rows_in_pool_order() -> None:
    """With no optimisation each centroid maps back to its own row; output sorted by pool position."""
    x = unit(300, 16, seed=21)
    picks = ParametricSelector(max_iter=0, progress=False, precision="fp32").select(_ctx(x, 42), 25)
    assert picks == sorted(_reference_draw(300, 25, 42))


def test_fps_init_is_farthest_point() -> None:
    x = unit(120, 5, seed=17)
    got = init_indices(x, 8, seed=3, init="fps").tolist()
    ref = _reference_draw(120, 1, 3)
    d = (x.double() - x[ref[0]].double()).norm(dim=1)
    for _ in range(7):
        ref.append(int(d.argmax()))
        d = torch.minimum(d, (x.double() - x[ref[-1]].double()).norm(dim=1))
    assert got == ref
    picks = ParametricSelector(max_iter=2, init="fps", progress=False).select(_ctx(x, 3), 8)
    assert len(set(picks)) == 8 and picks == sorted(picks)


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
