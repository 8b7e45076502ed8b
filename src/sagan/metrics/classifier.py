"""The offline Fashion-MNIST classifier used as a feature extractor (no download needed).

A small CNN on 32x32 grey images in [-1, 1]. Its penultimate layer (128 features) plays the role
Inception's pool features play for FID/KID/precision-recall, its logits the role of Inception's
logits for the (classifier) Inception Score, and its predictions give the class accuracy of
conditional samples. Trained by :func:`train_classifier` (``sagan train-evaluator``), reproducible
from a seed; the shipped weights live in ``sagan/metrics/weights/fmnist_cnn.pt``.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sagan.data.datasets import to_model_range
from sagan.errors import UsageError, WeightsError
from sagan.fileio import atomic_path
from sagan.metrics import WEIGHTS_DIR, WEIGHTS_FILE  # noqa: F401 (part of this module's interface)

INPUT_RESOLUTION = 32
FEATURE_DIM = 128
NUM_CLASSES = 10
FORMAT = "sagan-fmnist-cnn/1"


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class FMNISTClassifier(nn.Module):
    """conv16 -> pool -> conv32 -> pool -> conv64 -> pool -> flatten (1024) -> fc128 -> fc10.

    Deliberately small (about 156k parameters, 2.5M multiply-adds per image) so that it trains in
    minutes and evaluates thousands of samples per second on a CPU.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(1, width), nn.MaxPool2d(2),              # 16x16
            _conv(width, 2 * width), nn.MaxPool2d(2),      # 8x8
            _conv(2 * width, 4 * width), nn.MaxPool2d(2),  # 4x4
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(4 * width * 16, FEATURE_DIM), nn.ReLU())
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)
        # Features are divided by their RMS on the training set (set after training), so that
        # E|f|^2 / 128 = 1 as for Inception-like features; KID's cubic kernel (f.g / d + 1)^3 is
        # badly conditioned (huge subset variance) on features a few times larger.
        self.register_buffer("feature_scale", torch.tensor(1.0))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: float (N, 1, 32, 32) in [-1, 1] -> (penultimate features (N, 128), logits (N, 10))."""
        feats = self.fc(self.body(x))
        return feats / self.feature_scale, self.head(self.dropout(feats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]


def prepare_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [-1, 1] images (N, 1 or 3, H, W) -> float (N, 1, 32, 32) in [-1, 1].

    RGB is converted to grey with the ITU-R 601 weights (as PIL and torchvision do); other sizes
    are resized with antialiasing.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images shaped (N, 1 or 3, H, W), got {tuple(images.shape)}")
    x = to_model_range(images, torch.float32) if images.dtype == torch.uint8 else images.float()
    if x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x * w).sum(1, keepdim=True)
    if x.shape[-2:] != (INPUT_RESOLUTION, INPUT_RESOLUTION):
        x = F.interpolate(x, size=(INPUT_RESOLUTION, INPUT_RESOLUTION), mode="bilinear",
                          antialias=True, align_corners=False)
    return x


def weights_digest(path: Path = WEIGHTS_FILE) -> str:
    """First 10 hex digits of the weights file's SHA-256 (part of every cache key)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10]


def load_classifier(path: str | Path | None = None, device: str | torch.device = "cpu") -> FMNISTClassifier:
    path = Path(path) if path is not None else WEIGHTS_FILE
    if not path.is_file():
        raise WeightsError(f"Fashion-MNIST classifier weights {path} not found; make them with "
                           f"`sagan train-evaluator --out {path}` (a few minutes on a CPU)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a sagan Fashion-MNIST classifier ({FORMAT}); "
                           "re-create it with `sagan train-evaluator`")
    model = FMNISTClassifier()
    model.load_state_dict(state["model"])
    # float32 as trained and as prepare_input feeds it, whatever torch's default dtype is
    return model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)


def classifier_info(path: str | Path | None = None) -> dict:
    """The metadata stored with the weights (seed, epochs, test accuracy, ...)."""
    path = Path(path) if path is not None else WEIGHTS_FILE
    state = torch.load(path, map_location="cpu", weights_only=True)
    return dict(state.get("info", {}))


# --------------------------------------------------------------------------- training

@dataclass
class TrainResult:
    test_accuracy: float
    train_accuracy: float
    epochs: int
    seconds: float
    path: Path


def _batches(n: int, batch_size: int, gen: torch.Generator | None):
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


@torch.no_grad()
def accuracy(model: nn.Module, images_uint8: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    device = next(model.parameters()).device
    for idx in _batches(len(images_uint8), batch_size, None):
        logits = model(prepare_input(images_uint8[idx]).to(device))
        correct += int((logits.argmax(1).cpu() == labels[idx]).sum())
    return correct / len(images_uint8)


@torch.no_grad()
def feature_rms(model: FMNISTClassifier, images_uint8: torch.Tensor, batch_size: int = 1000) -> float:
    """sqrt(E |f|^2 / d) of the raw (unscaled) penultimate features over ``images_uint8``."""
    model.eval()
    total = 0.0
    device = next(model.parameters()).device
    for idx in _batches(len(images_uint8), batch_size, None):
        total += float(model.fc(model.body(prepare_input(images_uint8[idx]).to(device))).double().pow(2).sum())
    return math.sqrt(total / (len(images_uint8) * FEATURE_DIM))


def train_classifier(train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor,
                     test_labels: torch.Tensor, out: str | Path = WEIGHTS_FILE, seed: int = 0, epochs: int = 4,
                     batch_size: int = 128, lr: float = 3e-3, log: Callable[[str], None] = print,
                     device: str | torch.device = "cpu", progress: bool = False) -> TrainResult:
    """Train the classifier on uint8 (N, 1, 32, 32) images, seeded; write weights + metadata to ``out``.

    AdamW with a one-cycle schedule; augmentation: random horizontal flips and 2-pixel shifts
    (drawn on the CPU, whatever ``device``). Deterministic on a given machine, device and thread
    count for a given seed. ``progress``: a bar per epoch.
    """
    from tqdm import tqdm

    device = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = FMNISTClassifier().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(train_images) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        loss_sum, n_seen = 0.0, 0
        bar = tqdm(_batches(len(train_images), batch_size, gen), total=steps_per_epoch, disable=not progress,
                   desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False)
        for idx in bar:
            x = prepare_input(train_images[idx])
            flip = torch.rand(len(x), generator=gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            x = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
            loss = F.cross_entropy(model(x.to(device)), train_labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            n_seen += len(idx)
        acc = accuracy(model, test_images, test_labels)
        log(f"epoch {epoch + 1}/{epochs}: train loss {loss_sum / n_seen:.4f}, test accuracy {acc:.4f} "
            f"({time.perf_counter() - t0:.0f}s)")
    model.feature_scale.fill_(feature_rms(model, train_images))
    test_acc = accuracy(model, test_images, test_labels)
    train_acc = accuracy(model, train_images[:10000], train_labels[:10000])
    seconds = time.perf_counter() - t0
    out = Path(out)
    info = {"seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "test_accuracy": test_acc, "train_accuracy_first10k": train_acc,
            "train_seconds": round(seconds, 1), "feature_scale": float(model.feature_scale),
            "device": device.type, "torch": str(torch.__version__)}
    weights = {k: v.cpu() for k, v in model.state_dict().items()}
    try:
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            torch.save({"format": FORMAT, "model": weights, "info": info}, f)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as RuntimeError
        raise UsageError(f"could not write the classifier weights {out}: {type(e).__name__}: {e} "
                         "(the previous file, if any, is intact)") from e
    return TrainResult(test_acc, train_acc, epochs, seconds, out)
