"""The SAGAN training step: the maths, and nothing around it.

One call of :class:`SAGANStep` is ``n_dis`` discriminator updates and one generator update with
the configured loss (hinge by default), then the end-of-step buffer sync and the EMA update:

    for each of n_dis:   x, y  <- real batch [randomly flipped];  z, y~ <- noise
                         L_D = loss_D(D(T(x), y), D(T(G(z, y~)), y~)) [+ gp_weight * GP]
                         Adam step on D (lr_d)
    z, y~ <- noise;      L_G = loss_G(D(T(G(z, y~)), y~));  Adam step on G (lr_g)

T is the DiffAugment policy (``data.diffaugment``, the identity when empty), with its random
numbers from the noise stream like the latents.
    sync BN/SN buffers over processes;  EMA(G)

Precision has no branches here: autocast and the per-optimiser GradScalers are built once with
``enabled=`` (fp32 disables both; bf16 enables autocast; fp16 both, CUDA only). The schedule,
logging, checkpoints, FID tracking, divergence guard and signals are the run's
(:mod:`sagan.train.trainer`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from sagan import distributed as dist_utils
from sagan.data.augment import diff_augment, random_hflip
from sagan.errors import ConfigError
from sagan.losses import gradient_penalty, objective
from sagan.train.ema import EMA

Batch = tuple[torch.Tensor, torch.Tensor]


def noise_seed(seed: int, rollbacks: int = 0) -> int:
    """Seed of the run's noise stream (latents, fake labels, GP weights); a rollback without a
    learning-rate change draws a different stream, or it would replay the same blow-up."""
    return seed * 7919 + 17 + 1_000_003 * rollbacks


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """Scores from an autocast region in fp32 for the loss; fp32 and fp64 stay as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


@dataclass
class StepStats:
    loss_d: float
    loss_g: float
    d_real: float
    d_fake: float


def autocast_and_scalers(precision: str, device: torch.device) -> tuple[Callable[[], Any], tuple]:
    """The autocast context factory and the (G, D) GradScalers for ``train.precision``."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision={precision} needs CUDA (bf16 also runs on CPU); on this device use fp32")
    # CPU bf16 autocast is fast only on CPUs with native bf16 (AVX512-BF16/AMX); elsewhere it can
    # be far slower than fp32. Measure with `sagan bench --only precision`.
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    enabled = precision != "fp32"
    scalers = tuple(torch.amp.GradScaler(device.type, enabled=precision == "fp16") for _ in range(2))
    return (lambda: torch.autocast(device.type, dtype=dtype, enabled=enabled)), scalers


class SAGANStep:
    """G, D, their optimisers, the EMA copy and the noise stream of one process; call it to train one step.

    ``G_train``/``D_train`` are the DDP-wrapped models under torchrun (the raw ones otherwise);
    ``next_batch()`` returns this process's shard of the next real batch.
    """

    def __init__(self, cfg: Any, G: nn.Module, D: nn.Module, device: torch.device,
                 dist: dist_utils.DistInfo, next_batch: Callable[[], Batch], num_classes: int):
        t, o = cfg.train, cfg.optim
        self.cfg, self.device, self.dist, self.next_batch = cfg, device, dist, next_batch
        self.num_classes, self.step = num_classes, 0
        # Every rank draws the whole global batch's noise from one stream and keeps its shard (as
        # the batch stream does for images): the run does not depend on the number of processes,
        # and rank 0's checkpointed noise state is right for every rank on resume.
        self.noise = torch.Generator(device="cpu").manual_seed(noise_seed(t.seed))
        self.autocast, (self.scaler_g, self.scaler_d) = autocast_and_scalers(t.precision, device)
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.G, self.D = G, D
        self.ema = EMA(G, t.ema_decay, t.ema_start, t.ema_warmup, t.ema_bn, t.ema_bn_batches, t.ema_bn_batch_size,
                       bn_seed=t.seed)
        if t.compile:  # in place (Module.compile), so state-dict keys and the EMA copy are unaffected
            G.compile()
            D.compile()
        self.opt_g = torch.optim.Adam(G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2), eps=o.eps)
        self.opt_d = torch.optim.Adam(D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2), eps=o.eps)
        self.objective = objective(cfg.loss.name)  # the loss's D and G halves, looked up once
        self.G_train, self.D_train = dist_utils.wrap(G, dist), dist_utils.wrap(D, dist)

    # ------------------------------------------------------------------ noise
    def _shard(self, drawn: torch.Tensor) -> torch.Tensor:
        return drawn[self.dist.rank::self.dist.world].to(self.device)

    def latent(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = self.cfg.train.batch_size
        z = self._shard(torch.randn(n, self.cfg.model.z_dim, generator=self.noise))
        y = self._shard(torch.randint(0, self.num_classes, (n,), generator=self.noise)) if self.num_classes else None
        return z, y

    def uniforms(self, k: int) -> torch.Tensor:
        """(local batch, k) U(0, 1) values from the noise stream, drawn for the global batch and sharded."""
        return self._shard(torch.rand(self.cfg.train.batch_size, k, generator=self.noise))

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees of ``x`` (real or generated): the DiffAugment policy applied (``x`` when off)."""
        return diff_augment(x, self.cfg.data.diffaugment, self.uniforms)

    # ------------------------------------------------------------------ the updates
    def _update(self, loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def d_step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One discriminator update; returns its loss and D's scores of the real and the fake images."""
        loss = self.cfg.loss
        x, y_real = self.next_batch()
        y_real = y_real if self.num_classes else None
        if self.cfg.data.hflip:
            x = random_hflip(x, self.uniforms)
        z, y_fake = self.latent()
        with torch.no_grad(), self.autocast():
            fake = self.G(z, y_fake)
        with self.autocast():
            x_all = torch.cat([self.augment(x), self.augment(fake.to(x.dtype))]).contiguous(
                memory_format=self.memory_format)
            y_all = torch.cat([y_real, y_fake]) if y_real is not None else None
            scores = at_least_fp32(self.D_train(x_all, y_all))
            real_s, fake_s = scores[: len(x)], scores[len(x):]
            loss_d = self.objective.d_loss(real_s, fake_s)
        if loss.gp_weight > 0:
            # Interpolation weights from the noise stream, for the global batch, sharded like the latents.
            alpha = torch.rand(self.cfg.train.batch_size, generator=self.noise)[self.dist.rank::self.dist.world]
            loss_d = loss_d + loss.gp_weight * gradient_penalty(lambda im: self.D_train(self.augment(im), y_real),
                                                                x, fake, alpha)
        self._update(loss_d, self.opt_d, self.scaler_d)
        return loss_d, real_s, fake_s

    def g_step(self) -> torch.Tensor:
        """One generator update; D's weights are not updated, so their gradients are not computed."""
        z, y_fake = self.latent()
        trainable = [p for p in self.D.parameters() if p.requires_grad]  # frozen ones (FreezeD) stay frozen
        for p in trainable:
            p.requires_grad_(False)
        try:
            with self.autocast():
                loss_g = self.objective.g_loss(at_least_fp32(self.D(self.augment(self.G_train(z, y_fake)), y_fake)))
            self._update(loss_g, self.opt_g, self.scaler_g)
        finally:
            for p in trainable:
                p.requires_grad_(True)
        return loss_g

    def __call__(self) -> StepStats:
        self.G.train()
        self.D.train()
        for _ in range(self.cfg.train.n_dis):
            loss_d, real_s, fake_s = self.d_step()
        loss_g = self.g_step()
        self.step += 1
        # BN running stats differ per rank (per-shard batches); SN u/v must not drift either.
        dist_utils.sync_buffers(self.dist, self.G, self.D)
        self.ema.update(self.G, self.step)
        return StepStats(loss_d.item(), loss_g.item(), real_s.mean().item(), fake_s.mean().item())

    # ------------------------------------------------------------------ after a rollback
    def learning_rates(self) -> dict[str, float]:
        return {"lr_g": self.opt_g.param_groups[0]["lr"], "lr_d": self.opt_d.param_groups[0]["lr"]}

    def after_rollback(self, lr_scale: float, reseed_rollbacks: int | None, lr_before: dict[str, float]) -> list[str]:
        """The divergence guard's remedy, applied to the restored state: both learning rates times
        ``lr_scale``, and the noise stream reseeded for rollback number ``reseed_rollbacks`` (None:
        kept). Returns what changed, e.g. ``["lr_g 0.0001 -> 5e-05", ...]`` against ``lr_before``."""
        changes = []
        for name, opt in (("lr_g", self.opt_g), ("lr_d", self.opt_d)):
            for group in opt.param_groups:
                group["lr"] = group["lr"] * lr_scale
            changes.append(f"{name} {lr_before[name]:.3g} -> {opt.param_groups[0]['lr']:.3g}")
        if reseed_rollbacks is not None:
            self.noise.manual_seed(noise_seed(self.cfg.train.seed, reseed_rollbacks))
        return changes

    # ------------------------------------------------------------------ state
    @property
    def scalers(self) -> tuple[torch.amp.GradScaler, torch.amp.GradScaler]:
        """(G's, D's) GradScaler; disabled ones (every precision but fp16) pass losses through unscaled."""
        return self.scaler_g, self.scaler_d

    @scalers.setter
    def scalers(self, pair: tuple[torch.amp.GradScaler, torch.amp.GradScaler]) -> None:
        self.scaler_g, self.scaler_d = pair

    @property
    def fp16(self) -> bool:
        return self.scaler_g.is_enabled()

    def state_dict(self) -> dict[str, Any]:
        self.ema.refresh_bn(self.step)  # a saved EMA generator is ready to sample
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.ema.state_dict(),
                "G_ema_bn": self.ema.bn_record(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "scalers": [self.scaler_g.state_dict(), self.scaler_d.state_dict()] if self.fp16 else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.fp16 and state.get("scalers"):
            self.scaler_g.load_state_dict(state["scalers"][0])
            self.scaler_d.load_state_dict(state["scalers"][1])
