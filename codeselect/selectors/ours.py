"""ours: the paper's parametric, distribution-consistent and diversity-aware selector.

k centroids theta (k x d) start as copies of k pool embeddings (seeded; or farthest-point init).
Each step normalises them and minimises (SYSTEM.md section 3)

    J = -mean_i [ s_i/t - log(exp(s_i/t) + balance * r_{c_i}) ] = mean_i softplus(log(balance) + log r_{c_i} - s_i/t)

with s_i = max_j <f_i, theta_j>, c_i its argmax, and r_b = sum_a exp(<sg(theta_a), theta_b>/t): the
stop-gradient is on the summed-over side, so the gradient of r_b flows into theta_b itself.
Full-batch Adam, then the greedy unique mapping of centroids to samples (codeselect.mapping; at
precision fp32 the reference's own products and sort order).

Computed well: the argmax is exact (as fp32) and mostly skips the n x k product: a
`codeselect.mapping.NearestTracker` kept across steps re-scores each sample's 32 nearest
centroids in fp32 and bounds all the others by how far the centroids moved; only the rows whose
bound no longer proves the winner are screened again (bf16 or fp32 product, chunked, under
no_grad). The reference recomputes the whole n x k matrix every step. Only the winning pairs
carry gradient, so the sample-side backward is a sparse (k x n) @ (n x d) product, O(n d); the loss
uses the stable softplus form; the k x k repulsion is chunked (its softmax rows cached when they fit
in `kk_cache_mb`, then at bf16 built from its upper triangle, E being symmetric) and, with precision
bf16, runs in bf16 with an exact diagonal, fp32 row sums and the repulsion gradient accumulated
onto the attraction inside the matmul (one rounding of the total): the loss stays within ~1e-3 of fp32 on clustered centroids (tests/test_ours.py), and the
60-step benchmark's picks and final loss are compared with the reference's in
benchmarks/results/ours.md; precision fp32 computes everything in fp32 (the reference's subset).

The optimisation is a LightningModule run by a Lightning Trainer: CPU, one GPU, or DDP with the
features sharded across ranks (each rank's loss is scaled so that DDP's gradient averaging yields
the global gradient).
"""
from __future__ import annotations

import logging
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from codeselect.errors import UserError
from codeselect.mapping import NearestTracker, csr, greedy_unique_mapping, resolve_precision, rowwise_dot
from codeselect.selectors.base import SelectionContext, Selector, pool_embeddings

log = logging.getLogger(__name__)

KK_STRIP = 1024  # centroid rows per product in the symmetric k x k repulsion (bf16)


@dataclass
class Objective:
    """The loss on one shard of the features, with its gradient w.r.t. the normalised centroids.

    `scale` is the weight of one sample's term: 1/n in one process; world_size/n under DDP, whose
    gradient averaging then gives the global gradient (the repulsion's backward is linear in the
    per-centroid weights, so per-rank partial sums add up exactly).
    """

    features: torch.Tensor
    temperature: float = 0.07
    balance: float = 1.0
    scale: float = 1.0
    chunk_size: int = 4096
    precision: str = "auto"
    candidates: int = 32
    kk_cache_mb: float = 1024.0
    stats: dict[str, Any] = field(default_factory=dict)
    _features_bf16: torch.Tensor | None = field(default=None, repr=False)
    _tracker: NearestTracker | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.precision = resolve_precision(self.precision, self.features.device)

    def _kk_rows(self, k: int) -> int:
        return max(1, min(k, (64 << 20) // max(1, k)))  # 64M entries per k x k row block

    def _kk_block(self, theta_hat: torch.Tensor, theta_mm: torch.Tensor, lo: int, hi: int,
                  first_col: int = 0) -> torch.Tensor:
        """E = exp((<theta_j, theta_l> - 1)/t) for rows lo:hi and columns first_col: in `theta_mm`'s
        dtype, in [0, 1] (rows are unit vectors, so the largest logit is the diagonal's 1/t): one fused
        matmul and one in-place exp. With bf16 the diagonal, the largest term of every row, is
        computed in fp32."""
        shift = torch.full((1,), -1.0, dtype=theta_mm.dtype, device=theta_mm.device)
        t = self.temperature
        block = torch.addmm(shift, theta_mm[lo:hi], theta_mm[first_col:].T, beta=1.0 / t, alpha=1.0 / t).exp_()
        if theta_mm.dtype != torch.float32:
            rows = theta_hat[lo:hi]
            block.diagonal(offset=lo - first_col).copy_(((rowwise_dot(rows, rows) - 1.0) / t).exp_())
        return block

    def _kk_symmetric(self, theta_hat: torch.Tensor, theta_mm: torch.Tensor) -> torch.Tensor:
        """The whole E of `_kk_block` from its upper triangle: E is symmetric, so each strip of
        `KK_STRIP` rows is multiplied only with the centroids from its own first row on, and the
        part right of its diagonal block is mirrored below it (about half the products and exps of
        the full matrix). bf16 only: at fp32 the full products stay as the reference computes them."""
        k = theta_mm.shape[0]
        whole = torch.empty(k, k, dtype=theta_mm.dtype, device=theta_mm.device)
        for lo in range(0, k, KK_STRIP):
            hi = min(k, lo + KK_STRIP)
            strip = self._kk_block(theta_hat, theta_mm, lo, hi, first_col=lo)
            whole[lo:hi, lo:] = strip
            whole[hi:, lo:hi] = strip[:, hi - lo:].T
        return whole

    def log_repulsion(self, theta_hat: torch.Tensor, theta_mm: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
        """(log r_j, the row sums of E, the E blocks in the matmul dtype when they fit in
        `kk_cache_mb`), chunked. log r_j = 1/t + log sum_l exp((<theta_j, theta_l> - 1)/t): a
        log-sum-exp shifted by the row max.

        With precision bf16 the k x k products run in bf16 (about 5x faster than fp32 on this
        project's AVX512-BF16 CPU): the diagonal is exact and the other entries carry independent rounding errors of
        ~0.1-1%, which average out in the row sums (tests/test_ours.py bounds the loss and gradient
        against fp32)."""
        k = theta_hat.shape[0]
        theta_mm = self._for_matmul(theta_hat) if theta_mm is None else theta_mm
        item = theta_mm.element_size()
        cache: list[torch.Tensor] | None = [] if k * k * item <= self.kk_cache_mb * (1 << 20) else None
        row_sum = torch.empty(k, dtype=torch.float32, device=theta_hat.device)
        step = self._kk_rows(k)
        if cache is not None and theta_mm.dtype != torch.float32:
            whole = self._kk_symmetric(theta_hat, theta_mm)
            torch.sum(whole, dim=1, dtype=torch.float32, out=row_sum)
            return row_sum.log() + 1.0 / self.temperature, row_sum, list(whole.split(step))
        for lo in range(0, k, step):
            block = self._kk_block(theta_hat, theta_mm, lo, lo + step)
            # fp32 sums in one op (slices of rows were ~10x slower on the shared 2-core CPU: every
            # op is a parallel region whose barrier waits for a descheduled thread)
            torch.sum(block, dim=1, dtype=torch.float32, out=row_sum[lo:lo + block.shape[0]])
            if cache is not None:
                cache.append(block)
        return row_sum.log() + 1.0 / self.temperature, row_sum, cache

    def _add_repulsion_grad(self, attraction: torch.Tensor, theta_hat: torch.Tensor,
                            theta_mm: torch.Tensor, w: torch.Tensor, row_sum: torch.Tensor,
                            cache: list[torch.Tensor] | None) -> torch.Tensor:
        """attraction + the repulsion's gradient diag(w / r) E theta_hat / t (SYSTEM.md section 3).

        r_b = sum_a exp(<sg(u_a), u_b>/t): the stop-gradient is on the summed-over side, so the
        gradient of log r_b flows into u_b itself, row b = (w_b / r_b) sum_a E_ab u_a / t, with
        w_b = dJ/dlog r_b. In the shifted form used here E' = E exp(-1/t), row_sum = r exp(-1/t),
        so the row coefficient is w_b / (row_sum_b t).

        Near an optimum the repulsion nearly cancels the attraction, so the two are summed inside
        the matmul (fp32 accumulators, one rounding of the total): rows are divided by their
        coefficient first, pre_b = attraction_b / coef_b (bounded by row_sum_b), then
        total_b = coef_b (pre_b + (E' theta_hat)_b), with pre's own bf16 rounding added back in fp32.
        Rows whose centroid wins no sample have w_b = 0 and an attraction of 0: their gradient is 0.
        """
        k = theta_hat.shape[0]
        coef = w / (row_sum * self.temperature)
        active = coef > 0
        safe = torch.where(active, coef, torch.ones_like(coef))
        pre = torch.where(active[:, None], attraction / safe[:, None], attraction)
        pre_mm = pre.to(theta_mm.dtype)
        residual = pre - pre_mm.float()
        out = torch.empty_like(pre_mm)
        step = self._kk_rows(k)
        for b, lo in enumerate(range(0, k, step)):
            hi = min(k, lo + step)
            block = cache[b] if cache is not None else self._kk_block(theta_hat, theta_mm, lo, hi)
            torch.addmm(pre_mm[lo:hi], block, theta_mm, out=out[lo:hi])
        total = out.float().add_(residual)
        return torch.where(active[:, None], total * coef[:, None], attraction)

    def _for_matmul(self, theta_hat: torch.Tensor) -> torch.Tensor:
        """theta_hat in the dtype of the k x k products (bf16 or fp32)."""
        return theta_hat.to(torch.bfloat16) if self.precision == "bf16" else theta_hat

    @torch.no_grad()
    def loss_and_grad(self, theta_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale * sum_i loss_i, its gradient w.r.t. theta_hat), both fp32."""
        t = self.temperature
        feats = self.features
        theta_hat = theta_hat.float()
        k = theta_hat.shape[0]
        if self._tracker is None:  # kept across steps: its bounds skip most of the n x k screen
            self._tracker = NearestTracker(feats, candidates=self.candidates, chunk_size=self.chunk_size,
                                           precision=self.precision, x_bf16=self._features_bf16)
        s, c = self._tracker(theta_hat)
        a = s / t
        if self.balance > 0:
            theta_mm = self._for_matmul(theta_hat)
            logr, row_sum, cache = self.log_repulsion(theta_hat, theta_mm)
            z = (math.log(self.balance) + logr[c]) - a
            terms, p = F.softplus(z), torch.sigmoid(z)
        else:  # J = 0 and no gradient
            terms = p = torch.zeros_like(a)
        loss = (terms.double().sum() * self.scale).float()
        # dJ/ds_i = -scale p_i / t, only for the winning pair (i, c_i): a sparse (k x n) @ (n x d)
        grad = segment_sum(c, p * (-self.scale / t), feats, k)
        if self.balance > 0:
            grad = self._add_repulsion_grad(grad, theta_hat, theta_mm, torch.bincount(
                c, weights=p, minlength=k).float() * self.scale, row_sum, cache)
        self.stats = {"assigned_centroids": int(torch.count_nonzero(torch.bincount(c, minlength=k)))}
        return loss, grad


def segment_sum(index: torch.Tensor, weights: torch.Tensor, rows: torch.Tensor, k: int) -> torch.Tensor:
    """out_j = sum_{i: index_i = j} weights_i rows_i, as a CSR (k x n) @ (n x d) product: several
    times faster than index_add_ on CPU, no n x d temporary, deterministic (sums in sample order)."""
    order = torch.argsort(index, stable=True)
    return csr(index[order], order, weights[order].float(), (k, index.numel())) @ rows.float()


class _ObjectiveFn(torch.autograd.Function):
    """Autograd bridge: forward computes loss and gradient at once, backward hands the gradient on."""

    @staticmethod
    def forward(ctx: Any, theta_hat: torch.Tensor, objective: Objective) -> torch.Tensor:
        loss, grad = objective.loss_and_grad(theta_hat.detach())
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None


def parametric_loss(theta: torch.Tensor, objective: Objective) -> torch.Tensor:
    """The paper's loss of unnormalised centroids `theta` (differentiable w.r.t. theta)."""
    return _ObjectiveFn.apply(F.normalize(theta, dim=1), objective)


def init_indices(features: torch.Tensor, k: int, seed: int, init: str = "random") -> torch.Tensor:
    """The k pool rows the centroids start from, drawn as the reference draws them (SYSTEM.md
    section 3): `random.seed(seed); random.sample(range(n), k)`, reproduced by a private
    `random.Random(seed)` so global RNG state is untouched; centroid j starts at the j-th draw.
    `fps`: the first row from the same draw (`sample(range(n), 1)`), then farthest-point picks."""
    n = features.shape[0]
    rng = random.Random(int(seed))
    if init == "random":
        return torch.tensor(rng.sample(range(n), k), dtype=torch.long)
    if init == "fps":
        from codeselect.selectors.kcenter import greedy_kcenter

        first = rng.sample(range(n), 1)[0]
        picks, _ = greedy_kcenter(features.float(), k, first, progress=False)
        return torch.tensor(picks, dtype=torch.long)
    raise UserError(f"must be random or fps, got {init!r}", key="selector.init")


class CentroidModule(pl.LightningModule):
    """Parameters: the k centroids. Training step: the paper's loss on this rank's feature shard."""

    def __init__(self, features: torch.Tensor, init: torch.Tensor, *, lr: float,
                 features_bf16: torch.Tensor | None = None, **objective_kwargs: Any) -> None:
        super().__init__()
        self.centroids = torch.nn.Parameter(init.clone().float())
        self.full_features = features
        self.features_bf16 = features_bf16
        self.lr = lr
        self.objective_kwargs = objective_kwargs
        self.objective: Objective | None = None
        self.loss_history: list[float] = []

    def on_fit_start(self) -> None:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        n = self.full_features.shape[0]
        shard = torch.tensor_split(self.full_features, world)[rank].to(self.device)
        self.objective = Objective(shard, scale=world / n, **self.objective_kwargs)
        if world == 1 and self.features_bf16 is not None and self.features_bf16.device == shard.device:
            self.objective._features_bf16 = self.features_bf16  # the caller's copy, converted once

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = parametric_loss(self.centroids, self.objective)
        total = self.trainer.strategy.reduce(loss.detach(), reduce_op="mean")  # the global loss
        self.loss_history.append(float(total))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def optimise_centroids(features: torch.Tensor, init: torch.Tensor, *, max_iter: int = 300,
                       lr: float = 1e-3, accelerator: str = "cpu", devices: int | str = 1,
                       strategy: str = "auto", progress: bool = False, deterministic: bool = True,
                       features_bf16: torch.Tensor | None = None, info: dict | None = None,
                       **objective_kwargs: Any) -> tuple[torch.Tensor, list[float]]:
    """Run the Lightning Trainer for `max_iter` full-batch steps; return (centroids, loss history).
    `features_bf16`: the features already in bf16 (a caller that needs them again afterwards);
    `info`: filled with the nearest-centroid tracker's counts of this process (`screen`)."""
    from torch.utils.data import DataLoader

    if max_iter == 0:
        return init.clone().float(), []
    module = CentroidModule(features, init, lr=lr, features_bf16=features_bf16, **objective_kwargs)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    trainer = pl.Trainer(accelerator=accelerator, devices=devices, strategy=strategy,
                         max_steps=max_iter, max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=progress,
                         num_sanity_val_steps=0, use_distributed_sampler=False,
                         # CPU kernels used here are deterministic already; on GPU this makes
                         # index_add_ and friends deterministic too
                         deterministic=deterministic and accelerator not in ("cpu",),
                         precision="32-true")
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*GPU available but not used.*")
            warnings.filterwarnings("ignore", ".*isinstance.treespec, LeafSpec.*")
            trainer.fit(module, train_dataloaders=DataLoader(range(max_iter), batch_size=1))
    finally:  # the Trainer switches deterministic algorithms on globally; give the caller its state back
        torch.use_deterministic_algorithms(was_deterministic)
    if info is not None and module.objective is not None and module.objective._tracker is not None:
        stats = dict(module.objective._tracker.stats)
        stats["rows"] = int(module.objective.features.shape[0])
        info["screen"] = stats
    return module.centroids.detach().cpu(), module.loss_history


class ParametricSelector(Selector):
    """The paper's selector. Hyperparameters keep the reference's names and defaults."""

    def __init__(self, name: str = "ours", max_iter: int = 300, temperature: float = 0.07,
                 lr: float = 1e-3, balance: float = 1.0, init: str = "random",
                 chunk_size: int = 4096, precision: str = "auto", screen_candidates: int = 32,
                 kk_cache_mb: float = 1024.0, accelerator: str | None = None,
                 devices: int | str = 1, strategy: str = "auto", deterministic: bool = True,
                 mapping_candidates: int | None = None, mapping_chunk_size: int = 512,
                 progress: bool = True) -> None:
        checks = [("max_iter", max_iter >= 0), ("temperature", temperature > 0), ("lr", lr > 0),
                  ("balance", balance >= 0), ("chunk_size", chunk_size >= 1),
                  ("screen_candidates", screen_candidates >= 1),
                  ("mapping_candidates", mapping_candidates is None or mapping_candidates >= 1),
                  ("mapping_chunk_size", mapping_chunk_size >= 1)]
        for key, ok in checks:
            if not ok:
                raise UserError(f"out of range: {locals()[key]!r}", key=f"selector.{key}")
        if init not in ("random", "fps"):
            raise UserError(f"must be random or fps, got {init!r}", key="selector.init")
        if precision not in ("auto", "bf16", "fp32"):
            raise UserError(f"must be auto, bf16 or fp32, got {precision!r}", key="selector.precision")
        self.name = name
        self.max_iter, self.temperature, self.lr, self.balance = int(max_iter), temperature, lr, balance
        self.init, self.chunk_size, self.precision = init, int(chunk_size), precision
        self.screen_candidates, self.kk_cache_mb = int(screen_candidates), kk_cache_mb
        self.accelerator, self.devices, self.strategy = accelerator, devices, strategy
        self.deterministic = deterministic
        self.mapping_candidates = None if mapping_candidates is None else int(mapping_candidates)
        self.mapping_chunk_size = int(mapping_chunk_size)
        self.progress = progress

    def select(self, ctx: SelectionContext, k: int) -> list[int]:
        accelerator = self.accelerator or ("gpu" if str(ctx.device).startswith("cuda") else "cpu")
        device = "cuda" if accelerator in ("gpu", "cuda") else "cpu"
        precision = resolve_precision(self.precision, device)
        # unit rows already (the loader's F.normalize, as the reference's one): normalising again
        # would move ~5% of them by an ulp, and the fp32 subset would no longer be the reference's
        feats = pool_embeddings(ctx, k, "ours").float().to(device)
        feats_bf16 = feats.to(torch.bfloat16) if precision == "bf16" else None  # converted once

        t0 = time.perf_counter()
        start = init_indices(feats, k, ctx.seed, self.init)
        t1 = time.perf_counter()
        opt_info: dict[str, Any] = {}
        theta, history = optimise_centroids(
            feats, feats[start], max_iter=self.max_iter, lr=self.lr, accelerator=accelerator,
            devices=self.devices, strategy=self.strategy, progress=self.progress,
            deterministic=self.deterministic, features_bf16=feats_bf16, info=opt_info,
            temperature=self.temperature, balance=self.balance,
            chunk_size=self.chunk_size, precision=precision, candidates=self.screen_candidates,
            kk_cache_mb=self.kk_cache_mb)
        t2 = time.perf_counter()
        theta_hat = F.normalize(theta.to(device), dim=1)
        chosen, map_stats = greedy_unique_mapping(feats, theta_hat, candidates=self.mapping_candidates,
                                                  chunk_size=self.mapping_chunk_size, precision=precision,
                                                  x_bf16=feats_bf16)
        t3 = time.perf_counter()
        ctx.info.update({
            "loss_history": history,
            "final_loss": history[-1] if history else None,
            "steps": len(history),
            "init": self.init,
            "init_s": round(t1 - t0, 3),
            "optimisation_s": round(t2 - t1, 3),
            "mapping_s": round(t3 - t2, 3),
            "precision": precision,
            "accelerator": accelerator,
            "mapping": map_stats,
        })
        if "screen" in opt_info:  # the share of pool rows whose n x k screen ran, per step (rank 0)
            screen = opt_info["screen"]
            ctx.info["rescreened_fraction"] = round(screen["rescreened"] / max(1, screen["calls"] * screen["rows"]), 4)
        log.info("ours: %d steps in %.1f s (final loss %s), mapping %.2f s", len(history), t2 - t1,
                 f"{history[-1]:.5f}" if history else "n/a", t3 - t2)
        return sorted(chosen)  # the reference writes its picks in pool order
