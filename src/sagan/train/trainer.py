"""The run around the training step: schedule, logs, sample grids, checkpoints, FID tracking,
the divergence guard, stop signals and the random streams.

:class:`Trainer` owns one process's part of a run. The maths of a step is
:class:`sagan.train.step.SAGANStep`; the guard (:mod:`sagan.train.guard`) decides what a bad step
means and the run acts on it; resume and rollback share :meth:`Trainer.restore`, which also
rewinds ``metrics.csv`` and the TensorBoard events. Training-time FID is computed by an evaluator
the caller passes in (the command layer builds it from :mod:`sagan.metrics`); the run keeps
``checkpoints/best.pt`` by it.
"""
from __future__ import annotations

import contextlib
import copy
import os
import random
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from sagan import distributed as dist_utils
from sagan.config import Config
from sagan.data.datasets import ImageData
from sagan.data.grid import save_grid
from sagan.data.stream import BatchStream
from sagan.errors import (
    CheckpointError,
    ConfigError,
    TrainingDiverged,
    TrainingInterrupted,
)
from sagan.models import build_models, gamma_layers
from sagan.nn.norm import convert_sync_batchnorm
from sagan.runs.checkpoints import Checkpoints, check_compatible, read_best, save_best
from sagan.runs.folder import RunDir, code_version
from sagan.signals import StopRequest
from sagan.train.finetune import InitWeights, freeze_d_blocks, load_init_weights
from sagan.train.guard import DivergenceGuard, any_rank, describe_problem, log_event
from sagan.train.logger import ScalarLogger
from sagan.train.resolve import check_resolved
from sagan.train.step import SAGANStep, StepStats

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


# --------------------------------------------------------------------------- random streams
# A run draws from torch's global CPU (and CUDA) generator, Python's ``random``, numpy's global
# generator and the step's own noise generator (``SAGANStep.noise``): seeded per process, captured
# into every checkpoint as tensors and plain values (never pickled objects) and restored from it
# (exact resume and rollback), and kept still while sampling or evaluation runs.

def seed_globals(seed: int) -> None:
    """Seed torch's, Python's and numpy's global generators with ``seed``."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def capture_rng(noise: torch.Generator) -> dict[str, Any]:
    """Every stream's state, for a checkpoint's ``rng`` entry."""
    rng = {"torch": torch.get_rng_state(), "noise": noise.get_state(),
           "python": _py_random_state(), "numpy": _np_random_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any], noise: torch.Generator) -> None:
    """Set every stream to the state :func:`capture_rng` recorded (CUDA's only when both have CUDA)."""
    torch.set_rng_state(rng["torch"])
    noise.set_state(rng["noise"])
    _set_py_random_state(rng["python"])
    _set_np_random_state(rng["numpy"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


@contextlib.contextmanager
def rng_isolated(device: torch.device | str = "cpu"):
    """Run a block (sampling, evaluation) without moving any global RNG stream used by training.

    Saves and restores torch's CPU (and CUDA) generator, Python's ``random`` and numpy's global
    state, so exact resume holds however often the block runs.
    """
    py, npy = random.getstate(), np.random.get_state()
    with dist_utils.fork_rng(device):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


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


class Evaluator(Protocol):
    """Training-time FID (``sagan.metrics.tracking.TrainingFID``): scores of the EMA generator."""
    features: str
    num_samples: int
    fid_key: str  # the scalar names, labelled by features (sagan.metrics.naming)
    best_fid_key: str

    def due(self, step: int) -> bool: ...
    def __call__(self, g: torch.nn.Module) -> dict[str, float]: ...


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


class Trainer:
    """Owns the models' training step, data stream and schedule of one run (one process of it)."""

    def __init__(self, cfg: Config, run_dir: Path, data: ImageData, dist: dist_utils.DistInfo | None = None,
                 progress: bool = True, fid: Evaluator | None = None):
        """``cfg``: resolved for ``data`` (:func:`sagan.train.resolve.resolve_for_data`); never changed here."""
        check_resolved(cfg)
        self.cfg, self.data = cfg, data
        self.dist = dist or dist_utils.DistInfo()
        self.is_main = self.dist.rank == 0
        self.progress = progress and self.is_main
        t = cfg.train
        if t.deterministic:
            torch.use_deterministic_algorithms(True)
        self.num_classes, self.channels = data.num_classes, data.channels
        self.local_batch = t.batch_size // self.dist.world
        self.fixed_z, self.fixed_y, self.grid_cols = fixed_sample_inputs(cfg, self.num_classes, cfg.model.z_dim)
        self.guard = DivergenceGuard(t, cfg.loss.name)
        self.fid = fid
        self.best: tuple[float, int] = (float("inf"), -1)  # best.pt's (FID, step); resume() reads a run's
        # Running sums of the scalars since the last log row; checkpointed so logs resume exactly.
        self.log_acc: dict[str, float] = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0, "n": 0.0}
        self._initial_state: dict[str, Any] | None = None
        self.restored_from: Path | None = None  # the checkpoint resume() loaded, if any
        self.last_checkpoint: Path | None = None  # the newest this run wrote or restored (every rank knows it)
        # Identical initial weights on every rank (DDP would broadcast rank 0's to G and D, but
        # not to the EMA copy), then per-rank global streams.
        torch.manual_seed(t.seed)
        names = list(data.class_names) if len(data.class_names) == self.num_classes else None
        g, d = build_models(cfg.model, self.num_classes, self.channels, class_names=names)
        self.frozen_d = freeze_d_blocks(d, t.freeze_d_blocks)  # FreezeD; before DDP wraps D
        seed_globals(t.seed + self.dist.rank)
        self.run = RunDir(run_dir)
        self.run_dir = self.run.path
        self.ckpts = Checkpoints(self.run.checkpoints)  # this run's: listed, written, pruned
        self.device = dist_utils.resolve_device(t.device, self.dist)
        if t.sync_bn and self.dist.world > 1:
            g = convert_sync_batchnorm(g)  # same state-dict keys: checkpoints unchanged
        memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.stream = BatchStream(data, t.batch_size, t.seed, self.dist.rank, self.dist.world,
                                  self.device, cfg.data.num_workers)
        self.gan = SAGANStep(cfg, g.to(self.device, memory_format=memory_format),
                             d.to(self.device, memory_format=memory_format), self.device, self.dist,
                             self._next_batch, self.num_classes)
        self.logger = ScalarLogger(self.run_dir) if self.is_main else None

    # The step counter lives with the maths (the EMA schedule reads it); the run's schedule reads it here.
    step = property(lambda self: self.gan.step, lambda self, v: setattr(self.gan, "step", int(v)))

    def train_step(self) -> StepStats:
        return self.gan()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        rng = capture_rng(self.gan.noise)
        return {
            **self.gan.state_dict(),
            "stream": self.stream.state_dict(), "rng": rng,
            "config": self.cfg.to_dict(), "code_version": code_version(),
            "guard": self.guard.state_dict(), "log_acc": dict(self.log_acc),
            "data": {"num_classes": self.num_classes, "channels": self.channels,
                     "class_names": list(self.data.class_names), "name": self.data.name},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gan.load_state_dict(state)
        self.stream.load_state_dict(state["stream"])
        restore_rng(state["rng"], self.gan.noise)
        self.guard.load_state_dict(state.get("guard"))
        if isinstance(state.get("log_acc"), dict):
            self.log_acc.update({k: float(v) for k, v in state["log_acc"].items()})
        self.step = int(state["step"])

    def restore(self, state: dict[str, Any], path: Path | str) -> None:
        """Load a saved state (resume and rollback alike) and rewind the logs to its step."""
        try:
            self.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path} cannot be restored into this run: {type(e).__name__}: {e}") from None
        if self.logger is not None:
            self.logger.rewind(self.step)  # rows and events logged after the state are replayed

    def check_compatible(self, path: Path, state: dict[str, Any]) -> None:
        """Refuse (``CheckpointError`` naming each difference) a checkpoint of another architecture."""
        check_compatible(path, state, self.cfg.to_dict()["model"],
                         {"num_classes": self.num_classes, "channels": self.channels},
                         {"G": self.gan.G, "D": self.gan.D, "G_ema": self.gan.ema.shadow})

    def _warn(self, message: str) -> None:
        log_event(self.run_dir if self.is_main else None, message)

    def resume(self) -> int:
        """Load the newest readable checkpoint of the run directory; returns its step (0 if none).

        A checkpoint that cannot be read (damaged after it was written) is reported and the one
        before it is used; one from another architecture or a newer format is refused.
        """
        if self.is_main:
            self.best = read_best(self.run.best)  # (inf, -1) when there is none or it cannot be read
            for p in self.ckpts.remove_stale_temp_files():
                log_event(self.run_dir, f"removed {p.name}, left by a checkpoint write that was killed")
        state, path = self.ckpts.newest_loadable(
            self.device, lambda e: self._warn(f"warning: {e}\n  falling back to the previous checkpoint"))
        if state is not None:
            self.check_compatible(path, state)
            self.restore(state, path)
            self.restored_from = self.last_checkpoint = path
        elif self.logger is not None:
            self.logger.rewind(self.step)
        return self.step

    def initialise_from(self, init: InitWeights) -> str:
        """Start G, the EMA copy and (when the source has one) D from a trained model's weights
        (fine-tuning, ``train.init_from``); returns the start-up line saying what was loaded."""
        return load_init_weights(init, self.gan.G, self.gan.ema.shadow, self.gan.D, self.num_classes)

    def save(self) -> Path | None:
        """Checkpoint the current step (rank 0 writes it); returns its path on rank 0."""
        self.last_checkpoint = self.ckpts.path(self.step)
        if not self.is_main:
            return None
        return self.ckpts.save(self.state_dict(), self.step, self.cfg.train.keep_ckpts)

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def sample_grid(self, name: str | None = None) -> Path | None:
        if not self.is_main:
            return None
        self.gan.ema.refresh_bn(self.step)
        g = self.gan.ema.shadow
        z = self.fixed_z.to(self.device)
        y = self.fixed_y.to(self.device) if self.fixed_y is not None else None
        with rng_isolated(self.device):  # sampling must never move the training RNG streams
            images = g(z, y).float().cpu()
        path = self.run.samples / (name or f"step_{self.step:08d}.png")
        try:
            save_grid(images, path, self.grid_cols)
        except OSError as e:  # a sample grid is not worth stopping for; checkpoints report their own errors
            log_event(self.run_dir, f"warning: could not write the sample grid {path}: {e}")
            return None
        return path

    def gammas(self) -> dict[str, float]:
        gated = {**gamma_layers(self.gan.G, "G"), **gamma_layers(self.gan.D, "D")}
        return {f"gamma/{k}": float(v.gamma.detach()) for k, v in gated.items()}

    def track_fid(self) -> dict[str, float]:
        """Evaluate the EMA generator, log the scores, and keep ``best.pt`` when FID improved.

        The scalars are named for the extractor by the evaluator (``eval/fid`` with Inception,
        ``eval/fid_fmnist`` with the Fashion-MNIST classifier: ``fid_key``, ``best_fid_key``);
        ``best.pt``'s record keeps ``fid`` next to ``features``."""
        self.gan.ema.refresh_bn(self.step)  # scored as `sagan evaluate` would score it
        with rng_isolated(self.device):
            scalars = self.fid(self.gan.ema.shadow)
        if self.fid.fid_key not in scalars:  # not rank 0: its share of the samples is delivered
            return scalars
        fid = scalars[self.fid.fid_key]
        if fid < self.best[0]:
            self.best = (fid, self.step)
            save_best(self.state_dict(), self.run.best, self.step, {
                "fid": fid, "step": self.step, "features": self.fid.features, "num_samples": self.fid.num_samples})
        scalars[self.fid.best_fid_key] = self.best[0]
        if self.logger is not None:
            self.logger.log(self.step, scalars)
        return scalars

    # ------------------------------------------------------------------ divergence
    def _check_step(self, stats: StepStats) -> bool:
        """The guard's verdict on the step just taken, acted on: True when the run rolled back."""
        problem = describe_problem(stats, {"G": self.gan.G, "D": self.gan.D})
        if not any_rank(problem is not None, self.device):
            warning = self.guard.collapse_warning(self.step, stats.loss_d, stats.loss_g) if self.is_main else None
            if warning:
                log_event(self.run_dir, f"warning: {warning}")
            return False
        problem = problem or "another process reported non-finite values"
        self.guard.decide(problem, self.step, self._last_checkpoint_note())  # raises TrainingDiverged to stop
        from_step, before = self.step, self.guard.rollbacks
        lr_before = self.gan.learning_rates()
        state, source = self._last_good_state(problem)
        self.restore(state, source)  # sets guard.rollbacks to the checkpoint's count
        plan = self.guard.plan_rollback(before)
        changes = self.gan.after_rollback(plan.lr_scale, plan.total if plan.reseed_noise else None, lr_before)
        self._warn(f"divergence at step {from_step}: {problem}. Rolled back to step {self.step} ({source}); "
                   f"rollback {plan.total} of at most {self.guard.max_rollbacks}; {', '.join(changes)}")
        return True

    def _last_checkpoint_note(self) -> str:
        newest = self.last_checkpoint
        return f"the last good checkpoint is {newest}" if newest else "no checkpoint was written yet"

    def _last_good_state(self, problem: str) -> tuple[dict[str, Any], str]:
        state, path = self.ckpts.newest_loadable(
            self.device, lambda e: self._warn(f"warning: skipping unreadable checkpoint: {e}"))
        if state is not None:
            self.last_checkpoint = path
            return state, str(path)
        if self._initial_state is not None:
            return copy.deepcopy(self._initial_state), "the initial state (no checkpoint yet)"
        raise TrainingDiverged(self.guard.stop_message(
            f"training diverged at step {self.step} and there is no checkpoint to roll back to",
            self._last_checkpoint_note()), self.step)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> None:
        t = self.cfg.train
        acc = self.log_acc  # running sums since the last log row, plus their count "n"
        t_last, img_last = time.perf_counter(), 0
        saved_at = self.step if self.last_checkpoint is not None else -1  # a new run's folder holds no checkpoint
        if self.guard.mode == "rollback" and saved_at < 0:  # no checkpoint yet: the initial state is the fallback
            self._initial_state = copy.deepcopy(dict(self.state_dict(), step=self.step))
        bar = tqdm(total=t.steps, initial=self.step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, desc="train")
        # SIGTERM/SIGINT: finish the step, checkpoint, stop. Loader workers may die of the same signal.
        stop = StopRequest(on_stop=lambda: setattr(self.stream, "workers_may_exit", True),
                           duplicate_window=duplicate_signal_window()).install()
        try:
            if self.step == 0:
                self.sample_grid()
            while self.step < t.steps:
                stats = self.train_step()
                if self._check_step(stats):  # non-finite values: rolled back to a good checkpoint
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
                    t_last += self.track_fid()["eval/seconds"]
                if any_rank(stop.requested, self.device) and self.step < t.steps:
                    path = self.save() if saved_at != self.step else (self.last_checkpoint if self.is_main else None)
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
        # Whatever fetching a batch draws stays off torch's global stream, or resume is not exact.
        # The image-folder DataLoader seeds its workers from its own generator (data/stream.py); this
        # guards the rest (a dataset or transform that draws from the global RNG).
        with torch.random.fork_rng(devices=[]):
            return next(self.stream)
