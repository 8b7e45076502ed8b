"""The configuration schema: the dataclasses a run's configuration is made of, and their defaults.

This module imports nothing from the package, so every layer can type against it (the models take a
``ModelConfig``, the data loaders a ``DataConfig``). What the values may be is checked by the
component that uses them (``sagan.models.arch.check_model_config``, ``sagan.data.datasets.check_data_config``,
``sagan.losses.check_loss_config``), all called by ``sagan.config.validate``; presets, overrides and
YAML files are ``sagan.config``'s.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

ON_DIVERGENCE = ("rollback", "stop")
MAX_TRAIN_SEED = 2**31 - 1  # train.seed: numpy's global seed must stay below 2**32 even with the rank added
MAX_SAMPLE_SEED = 2**63 - 1  # a sample's seed (--seed, --seeds, generate(seeds=)): what torch.Generator takes
PRECISIONS = ("fp32", "bf16", "fp16", "auto")  # auto: measured at start (sagan.train.precision)
FID_FEATURES = ("auto", "fmnist", "inception")

# Standing statistics of the EMA generator (sagan.models.standing), chosen by measurement on the shipped
# fmnist32 model (docs/models.md, "Standing statistics"): FID and class accuracy stop changing beyond
# these, and the cost is a few seconds.
STANDING_BATCHES = 16
STANDING_BATCH_SIZE = 128


@dataclass
class ModelConfig:
    resolution: int = 32
    g_ch: int = 16
    d_ch: int = 16
    z_dim: int = 128
    g_attn: list[int] = field(default_factory=lambda: [16])
    d_attn: list[int] = field(default_factory=lambda: [16])
    attn_variant: str = "paper"
    attn_bias: bool = False  # biases on the attention 1x1 convs (the paper has none; older versions had them)
    attn_reduction: int = 8  # query/key width C/attn_reduction (1, 2, 4 or 8; the paper's C/8)
    # Residual bottleneck blocks sized like the attention layer (nn.blocks.ResidualBottleneck), at these
    # feature-map sizes: the attention study's control arm (docs/experiments.md).
    g_resblock: list[int] = field(default_factory=list)
    d_resblock: list[int] = field(default_factory=list)
    # Where D's attention / bottleneck layer at a size goes when several blocks output that size (the blocks
    # after D's last downsampling): after the first of them, or after each ("every", versions before 0.2).
    d_extra_layers: str = "first"
    conditional: bool = True
    g_sn: bool = True
    d_sn: bool = True
    # Weight init of G and D: ortho (sagan.nn.spectral.DEFAULT_INIT), xavier (the authors'), normal (N(0, 0.02)).
    init: str = "ortho"


def migrate_model_section(model: Any) -> Any:
    """A stored ``model`` section (a run's config.yaml, a checkpoint's config) with the keys added
    since it was written filled in with what it meant then; a copy, the input is left alone.

    * ``attn_bias``: before the key existed the paper variant's attention convs had biases and the
      biggan variant's had none, so its absence means ``attn_variant == "paper"``.
    * ``init``: before the key existed every weight was initialised orthogonally.
    * ``d_extra_layers``: before the key existed D placed a layer after every block of its size.

    Anything that is not a mapping is returned unchanged for the strict checks to report.
    """
    if not isinstance(model, dict):
        return model
    out = dict(model)
    if "attn_bias" not in out:
        out["attn_bias"] = out.get("attn_variant", "paper") == "paper"
    out.setdefault("init", "ortho")
    out.setdefault("d_extra_layers", "every")
    return out


@dataclass
class DataConfig:
    dataset: str = "fashion_mnist"
    root: str | None = None
    channels: int | None = None  # 1 or 3; None: what the dataset has (1 for Fashion-MNIST)
    download: bool = True
    num_workers: int = 0
    hflip: bool = False  # flip real images left-right with probability 1/2 (every step; resumes exactly)
    # DiffAugment policy for D's inputs, real and generated (data/augment.py): any of color, translation,
    # cutout, in order; [] = off; auto = what the small-data A/Bs support for the data, today off
    # everywhere (data/augment.py AUTO_MAX_IMAGES; resolved when the data is read; docs/experiments.md).
    diffaugment: list[str] | str = "auto"


@dataclass
class OptimConfig:
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.9
    eps: float = 1e-8


@dataclass
class LossConfig:
    name: str = "hinge"
    gp_weight: float = 0.0  # WGAN-GP penalty weight (0 = off)


@dataclass
class TrainConfig:
    steps: int = 4000
    batch_size: int = 64  # global batch (summed over processes in distributed runs)
    n_dis: int = 1
    seed: int = 0
    ema_decay: float = 0.999
    ema_start: int = 0
    ema_warmup: bool = True  # decay ramps up as min(ema_decay, (1+n)/(10+n)) after ema_start
    # The EMA generator's batch-norm statistics (docs/models.md): "standing" recomputes them from its own
    # samples (ema_bn_batches x ema_bn_batch_size latents) before it is sampled, scored or saved; "copy"
    # takes the raw G's, as versions before 0.2 did.
    ema_bn: str = "standing"
    ema_bn_batches: int = STANDING_BATCHES
    ema_bn_batch_size: int = STANDING_BATCH_SIZE
    log_every: int = 20
    sample_every: int = 250
    ckpt_every: int = 500
    keep_ckpts: int = 3
    sample_classes: int = 10  # rows of the sample grid for conditional models
    device: str = "auto"
    # fp32, bf16, fp16 (CUDA only), or auto: fp32 or bf16 by a measured probe (sagan.train.precision: bf16
    # where it is at least 1.2x faster; the bf16 quality check found it no worse). config.yaml stores the choice.
    precision: str = "fp32"
    deterministic: bool = False
    sync_bn: bool = False  # distributed: G's batch norms use global-batch statistics
    channels_last: bool = False  # NHWC memory format for G and D (faster convs on recent GPUs)
    compile: bool = False  # torch.compile G and D (needs a C++ compiler on CPU)
    # Divergence guard (see docs/robustness.md): what to do when a loss or weight becomes non-finite.
    on_divergence: str = "rollback"  # rollback to the last good checkpoint, or stop
    rollback_lr_factor: float = 0.5  # multiply both learning rates by this on each rollback (1 = keep)
    max_rollbacks: int = 3  # stop after this many rollbacks in one run
    collapse_window: int = 1000  # steps of the collapse detector's window (0 = off)
    collapse_d_loss: float = 0.05  # |D loss| below this for a whole window counts as "D near 0"
    # FID tracked during training (docs/evaluation.md); the best checkpoint by it is kept as checkpoints/best.pt.
    fid_every: int = 0  # steps between evaluations (0 = off; fmnist32 uses 1000, cifar32 and imagefolder64 5000)
    fid_samples: int = 2000  # generated images per evaluation (reference: all training images)
    fid_features: str = "auto"  # auto (fmnist for Fashion-MNIST, else inception if its weights are local), fmnist, inception
    # Fine-tuning (docs/finetuning.md): the model the weights start from (sagan train --init-from; the
    # checkpoint file, exported folder or shipped name it resolved to), and FreezeD.
    init_from: str | None = None
    freeze_d_blocks: int = 0  # the first K discriminator blocks (input side) are not updated (0 = off)


@dataclass
class Config:
    preset: str = "fmnist32"
    name: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)
