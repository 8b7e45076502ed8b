"""The SAGAN training loop: hinge loss, TTUR, EMA, sample grids, logs and checkpoints."""
from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from sagan.config import Config, ConfigError
from sagan.data.datasets import ImageData
from sagan.data.stream import BatchStream
from sagan.losses import d_loss, g_loss, gradient_penalty
from sagan.models import attention_layers, build_models
from sagan.train import distributed as dist_utils
from sagan.train.checkpoint import (CheckpointError, check_compatible, list_checkpoints, load_checkpoint,
                                    remove_stale_temp_files, save_checkpoint)
from sagan.train.ema import EMA
from sagan.train.guard import DivergenceGuard, log_event
from sagan.train.logger import ScalarLogger
from sagan.train.rundir import code_version
from sagan.train.signals import StopRequest, TrainingInterrupted

# Under torchrun the same SIGTERM/SIGINT can reach a worker twice within milliseconds (scheduler and
# agent); within this many seconds a repeat is the same stop request (docs/robustness.md).
# $SAGAN_DUPLICATE_SIGNAL_WINDOW overrides it (e.g. on heavily loaded nodes).
DUPLICATE_SIGNAL_WINDOW = 2.0
WINDOW_ENV = "SAGAN_DUPLICATE_SIGNAL_WINDOW"


def duplicate_signal_window() -> float:
    """The duplicate-signal window in seconds: 0 outside torchrun, else the default or $SAGAN_DUPLICATE_SIGNAL_WINDOW."""
    if not dist_utils.under_torchrun():
        return 0.0
    raw = os.environ.get(WINDOW_ENV, "")
    if not raw:
        return DUPLICATE_SIGNAL_WINDOW
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise ConfigError(f"{WINDOW_ENV}={raw!r} is not a number of seconds >= 0; unset it for the default "
                          f"({DUPLICATE_SIGNAL_WINDOW} s)")
    return value


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available; use train.device=cpu")
    return dev


def fixed_sample_inputs(cfg: Config, num_classes: int, z_dim: int, cols: int = 8) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Fixed noise (and labels) for the sample grid: one row per class when conditional."""
    g = torch.Generator().manual_seed(cfg.train.seed + 12345)
    if num_classes > 0:
        rows = min(num_classes, cfg.train.sample_classes)
        classes = torch.linspace(0, num_classes - 1, rows).round().long()
        y = classes.repeat_interleave(cols)
        z = torch.randn(rows * cols, z_dim, generator=g)
        return z, y, cols
    z = torch.randn(64, z_dim, generator=g)
    return z, None, 8


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """Scores from an autocast region in fp32 for the loss; fp32 and fp64 stay as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


@dataclass
class StepStats:
    loss_d: float
    loss_g: float
    d_real: float
    d_fake: float


class Trainer:
    """Owns models, optimisers, data stream and schedule of one run (one process of it)."""

    def __init__(self, cfg: Config, run_dir: Path, data: ImageData, dist: dist_utils.DistInfo | None = None,
                 progress: bool = True):
        self.cfg, self.run_dir, self.data = cfg, Path(run_dir), data
        self.dist = dist or dist_utils.DistInfo()
        self.is_main = self.dist.rank == 0
        self.progress = progress and self.is_main
        t = cfg.train
        self.device = self.dist.device if self.dist.world > 1 else resolve_device(t.device)
        if t.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(t.seed + self.dist.rank)
        random.seed(t.seed + self.dist.rank)
        np.random.seed(t.seed + self.dist.rank)
        self.num_classes, self.channels = data.num_classes, data.channels
        # Identical initial weights on every rank (DDP would broadcast rank 0's to G and D, but
        # not to the EMA copy made below), then per-rank streams again.
        torch.manual_seed(t.seed)
        g, d = build_models(cfg.model, self.num_classes, self.channels)
        torch.manual_seed(t.seed + self.dist.rank)
        if t.sync_bn and self.dist.world > 1:
            g = dist_utils.convert_sync_batchnorm(g)  # same state-dict keys: checkpoints unchanged
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.G = g.to(self.device, memory_format=self.memory_format)
        self.D = d.to(self.device, memory_format=self.memory_format)
        self.ema = EMA(self.G, t.ema_decay, t.ema_start, t.ema_warmup)
        if t.compile:  # in place (Module.compile), so state-dict keys and the EMA copy are unaffected
            self.G.compile()
            self.D.compile()
        o = cfg.optim
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2), eps=o.eps)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2), eps=o.eps)
        self.G_train, self.D_train = dist_utils.wrap(self.G, self.dist), dist_utils.wrap(self.D, self.dist)
        self.stream = BatchStream(data, t.batch_size, t.seed, self.dist.rank, self.dist.world,
                                  self.device, cfg.data.num_workers)
        self.local_batch = t.batch_size // self.dist.world
        # Noise and fake labels come from their own generator so resume restores them exactly.
        # Every rank draws the whole global batch's noise from the same stream and keeps its
        # shard (as BatchStream does for images), so the run does not depend on the number of
        # processes and rank 0's checkpointed noise state is right for every rank on resume.
        self.noise = torch.Generator(device="cpu").manual_seed(t.seed * 7919 + 17)
        self.step = 0
        self.attn_g = attention_layers(self.G, "G")
        self.attn_d = attention_layers(self.D, "D")
        self.fixed_z, self.fixed_y, self.grid_cols = fixed_sample_inputs(cfg, self.num_classes, cfg.model.z_dim)
        self.logger = ScalarLogger(self.run_dir) if self.is_main else None
        self.guard = DivergenceGuard(self)
        from sagan.metrics.tracking import TrainingFID  # FID every train.fid_every steps; None when off
        self.fid = TrainingFID.from_config(cfg, data, self.device, self.run_dir, dist=self.dist,
                                           say=print if self.is_main else (lambda *a, **k: None))
        # Running sums of the scalars since the last log row; checkpointed so logs resume exactly.
        self.log_acc: dict[str, float] = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0, "n": 0.0}
        self.autocast, self.scalers = self._precision_setup()

    # ------------------------------------------------------------------ precision
    def _precision_setup(self):
        p = self.cfg.train.precision
        if p == "fp32":
            return contextlib.nullcontext, None
        if self.device.type == "cpu" and p == "bf16":
            # CPU autocast: fast only on CPUs with native bf16 (AVX512-BF16/AMX); elsewhere it
            # can be far slower than fp32. Measure with `sagan bench --only precision`.
            return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)), None
        if self.device.type != "cuda":
            raise ConfigError(f"train.precision={p} needs CUDA (bf16 also runs on CPU); on this device use fp32")
        dtype = torch.bfloat16 if p == "bf16" else torch.float16
        scalers = (torch.amp.GradScaler("cuda"), torch.amp.GradScaler("cuda")) if p == "fp16" else None
        return (lambda: torch.autocast("cuda", dtype=dtype)), scalers

    def _backward_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, which: int) -> None:
        if self.scalers is None:
            loss.backward()
            opt.step()
        else:
            scaler = self.scalers[which]
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    # ------------------------------------------------------------------ one step
    def _latent(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        n, r, w = self.cfg.train.batch_size, self.dist.rank, self.dist.world
        z = torch.randn(n, self.cfg.model.z_dim, generator=self.noise)[r::w].to(self.device)
        if self.num_classes > 0:
            y = torch.randint(0, self.num_classes, (n,), generator=self.noise)[r::w].to(self.device)
        else:
            y = None
        return z, y

    def train_step(self) -> StepStats:
        cfg = self.cfg
        loss_name = cfg.loss.name
        self.G.train()
        self.D.train()
        for _ in range(cfg.train.n_dis):
            x, y_real = self._next_batch()
            y_real = y_real if self.num_classes > 0 else None
            z, y_fake = self._latent()
            with torch.no_grad(), self.autocast():
                fake = self.G(z, y_fake)
            with self.autocast():
                x_all = torch.cat([x, fake.to(x.dtype)]).contiguous(memory_format=self.memory_format)
                y_all = torch.cat([y_real, y_fake]) if y_real is not None else None
                scores = at_least_fp32(self.D_train(x_all, y_all))
                real_s, fake_s = scores[: len(x)], scores[len(x):]
                loss_d = d_loss(loss_name, real_s, fake_s)
            if cfg.loss.gp_weight > 0:
                # Interpolation weights from the run's noise stream, drawn for the global batch and
                # sharded like the latents: resume is exact and N processes match one.
                n, r, w = cfg.train.batch_size, self.dist.rank, self.dist.world
                alpha = torch.rand(n, generator=self.noise)[r::w]
                gp = gradient_penalty(lambda im: self.D_train(im, y_real), x, fake, alpha)
                loss_d = loss_d + cfg.loss.gp_weight * gp
            self.opt_d.zero_grad(set_to_none=True)
            self._backward_step(loss_d, self.opt_d, 1)
        # Generator step. D's weights are not updated here, so its gradients are not computed.
        z, y_fake = self._latent()
        self.D.requires_grad_(False)
        try:
            with self.autocast():
                fake = self.G_train(z, y_fake)
                loss_g = g_loss(loss_name, at_least_fp32(self.D(fake, y_fake)))
            self.opt_g.zero_grad(set_to_none=True)
            self._backward_step(loss_g, self.opt_g, 0)
        finally:
            self.D.requires_grad_(True)
        self.step += 1
        # BN running stats differ per rank (per-shard batches); SN u/v must not drift either.
        dist_utils.sync_buffers(self.dist, self.G, self.D)
        self.ema.update(self.G, self.step)
        return StepStats(loss_d.item(), loss_g.item(), real_s.mean().item(), fake_s.mean().item())

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "noise": self.noise.get_state(),
               "python": _py_random_state(), "numpy": _np_random_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.ema.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "stream": self.stream.state_dict(), "rng": rng,
            "scalers": [s.state_dict() for s in self.scalers] if self.scalers else None,
            "config": self.cfg.to_dict(), "code_version": code_version(),
            "guard": self.guard.state_dict(), "log_acc": dict(self.log_acc),
            "data": {"num_classes": self.num_classes, "channels": self.channels,
                     "class_names": list(self.data.class_names), "name": self.data.name},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.stream.load_state_dict(state["stream"])
        if self.scalers and state.get("scalers"):
            for s, st in zip(self.scalers, state["scalers"]):
                s.load_state_dict(st)
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        self.noise.set_state(rng["noise"])
        _set_py_random_state(rng["python"])
        _set_np_random_state(rng["numpy"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.guard.load_state_dict(state.get("guard"))
        if isinstance(state.get("log_acc"), dict):
            self.log_acc.update({k: float(v) for k, v in state["log_acc"].items()})
        self.step = int(state["step"])

    def check_compatible(self, path: Path, state: dict[str, Any]) -> None:
        """Refuse (``CheckpointError`` naming each difference) a checkpoint of another architecture."""
        check_compatible(path, state, self.cfg.to_dict()["model"],
                         {"num_classes": self.num_classes, "channels": self.channels},
                         {"G": self.G, "D": self.D, "G_ema": self.ema.shadow})

    def resume(self) -> int:
        """Load the newest readable checkpoint of the run directory; returns its step (0 if none).

        A checkpoint that cannot be read (damaged after it was written) is reported and the one
        before it is used; one from another architecture or a newer format is refused.
        """
        ckpt_dir = self.run_dir / "checkpoints"
        if self.is_main:
            for p in remove_stale_temp_files(ckpt_dir):
                log_event(self.run_dir, f"removed {p.name}, left by a checkpoint write that was killed")
        ckpts = list_checkpoints(ckpt_dir)
        state, path = None, None
        for cand in reversed(ckpts):
            try:
                state, path = load_checkpoint(cand, map_location=self.device), cand
                break
            except CheckpointError as e:
                if "newer than this code" in str(e):
                    raise
                log_event(self.run_dir if self.is_main else None,
                          f"warning: {e}\n  falling back to the previous checkpoint")
        if ckpts and state is None:
            raise CheckpointError(f"none of the {len(ckpts)} checkpoint(s) in {ckpt_dir} can be read; "
                                  "see the warnings above")
        if state is not None:
            self.check_compatible(path, state)
            try:
                self.load_state_dict(state)
            except (KeyError, RuntimeError, ValueError, TypeError) as e:
                raise CheckpointError(f"{path} cannot be restored into this run: {type(e).__name__}: {e}") from None
        if self.logger is not None:
            self.logger.truncate_after(self.step)  # rows logged after the checkpoint are replayed
            _purge_tensorboard_after(self.logger, self.run_dir, self.step)
        return self.step

    def save(self) -> Path | None:
        if not self.is_main:
            return None
        return save_checkpoint(self.state_dict(), self.run_dir / "checkpoints", self.step, self.cfg.train.keep_ckpts)

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def sample_grid(self, name: str | None = None) -> Path | None:
        if not self.is_main:
            return None
        from sagan.viz.grid import save_grid
        g = self.ema.shadow
        z = self.fixed_z.to(self.device)
        y = self.fixed_y.to(self.device) if self.fixed_y is not None else None
        with rng_isolated(self.device):  # sampling must never move the training RNG streams
            images = g(z, y).float().cpu()
        path = self.run_dir / "samples" / (name or f"step_{self.step:08d}.png")
        try:
            save_grid(images, path, self.grid_cols)
        except OSError as e:  # a sample grid is not worth stopping for; checkpoints report their own errors
            log_event(self.run_dir, f"warning: could not write the sample grid {path}: {e}")
            return None
        return path

    def gammas(self) -> dict[str, float]:
        return {f"gamma/{k}": float(v.gamma.detach()) for k, v in {**self.attn_g, **self.attn_d}.items()}

    # ------------------------------------------------------------------ the loop
    def fit(self) -> None:
        t = self.cfg.train
        acc = self.log_acc  # running sums since the last log row, plus their count "n"
        t_last, img_last = time.perf_counter(), 0
        saved_at = self.step if list_checkpoints(self.run_dir / "checkpoints") else -1
        self.guard.begin()
        bar = tqdm(total=t.steps, initial=self.step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, desc="train")
        if self.step == 0:
            self.sample_grid()
        # SIGTERM/SIGINT: finish the step, checkpoint, stop. Loader workers may die of the same signal.
        stop = StopRequest(on_stop=lambda: setattr(self.stream, "workers_may_exit", True),
                           duplicate_window=duplicate_signal_window()).install()
        try:
            while self.step < t.steps:
                stats = self.train_step()
                if self.guard.after_step(stats):  # non-finite values: rolled back to a good checkpoint
                    bar.reset(total=t.steps)
                    bar.update(self.step)
                    saved_at = self.step
                    continue
                for k in StepStats.__dataclass_fields__:
                    acc[k] += getattr(stats, k)
                acc["n"] += 1
                img_last += t.batch_size * t.n_dis
                bar.update(1)
                if self.step % t.log_every == 0 or self.step == t.steps:
                    now = time.perf_counter()
                    ips = img_last / max(now - t_last, 1e-9)
                    scalars = {k: v / max(acc["n"], 1) for k, v in acc.items() if k != "n"}
                    scalars["images_per_s"] = ips
                    scalars.update(self.gammas())
                    if self.logger is not None:
                        self.logger.log(self.step, scalars)
                    bar.set_postfix(d=f"{scalars['loss_d']:.3f}", g=f"{scalars['loss_g']:.3f}",
                                    img_s=f"{ips:.0f}")
                    acc.update(dict.fromkeys(acc, 0.0))
                    t_last, img_last = now, 0
                if self.step % t.sample_every == 0 or self.step == t.steps:
                    self.sample_grid()
                if self.step % t.ckpt_every == 0 or self.step == t.steps:
                    self.save()
                    saved_at = self.step
                if self.fid is not None and self.fid.due(self.step):
                    with rng_isolated(self.device):  # logs eval/* scalars, keeps checkpoints/best.pt
                        t_last += self.fid.evaluate_and_keep_best(self)["eval/seconds"]
                if _any_rank(stop.requested, self.device) and self.step < t.steps:
                    path = self.save() if saved_at != self.step else self._newest_checkpoint()
                    dist_utils.barrier(self.dist)
                    raise TrainingInterrupted(stop.signum or 15, self.step, path)
        finally:
            if stop.requested:
                self.stream.close()  # shut down the loader workers that survived the signal
            stop.restore()
            bar.close()
            if self.logger is not None:
                self.logger.close()


    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        # A fresh DataLoader iterator (image folders, after every resume) draws its base seed from
        # torch's global RNG; keep that draw from shifting the global stream, or resume is not exact.
        with torch.random.fork_rng(devices=[]):
            return next(self.stream)

    def _newest_checkpoint(self) -> Path | None:
        ckpts = list_checkpoints(self.run_dir / "checkpoints") if self.is_main else []
        return ckpts[-1] if ckpts else None


@contextlib.contextmanager
def rng_isolated(device: torch.device | str = "cpu"):
    """Run a block (sampling, evaluation) without moving any global RNG stream used by training.

    Saves and restores torch's CPU (and CUDA) generator, Python's ``random`` and numpy's global
    state, so exact resume holds however often the block runs.
    """
    dev = torch.device(device)
    devices = [dev.index or 0] if dev.type == "cuda" else []
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def _any_rank(flag: bool, device: torch.device) -> bool:
    from sagan.train.guard import _any_rank as any_rank
    return any_rank(flag, device)


def _purge_tensorboard_after(logger: ScalarLogger, run_dir: Path, step: int) -> None:
    """Reopen the TensorBoard writer so events after ``step`` (to be replayed) are discarded."""
    if getattr(logger, "tb", None) is None:
        return
    from torch.utils.tensorboard import SummaryWriter
    logger.tb.close()
    logger.tb = SummaryWriter(str(run_dir / "tb"), purge_step=step + 1)


def _py_random_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_py_random_state(s: list) -> None:
    random.setstate((s[0], tuple(s[1]), s[2]))


def _np_random_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_np_random_state(s: dict) -> None:
    np.random.set_state(("MT19937", s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached"]))
