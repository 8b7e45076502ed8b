"""Typed configuration, presets and strict overrides.

A run's configuration is a tree of dataclasses. It is built from a preset, then optionally a
YAML file, then ``--set section.key=value`` overrides; unknown keys and invalid values raise
``ConfigError`` naming the key and what is allowed, before any data is loaded or compute spent.
The fully resolved tree is written to ``config.yaml`` in every run directory.

The dataclasses and their defaults are :mod:`sagan.schema`'s; what a section's values may be is
checked by the component that uses it (see ``validate``).
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from sagan.data.datasets import DATASETS, check_data_config, detect_folder_dataset
from sagan.errors import ConfigError
from sagan.losses import check_loss_config
from sagan.models.arch import (
    D_ARCH,
    RESOLUTIONS,
    check_model_config,
    d_attention_sizes,
    g_attention_sizes,
)
from sagan.models.standing import BN_MODES

# The dataclasses are sagan.schema's (below every component, so the components type against them);
# their names are importable from here as they always were.
from sagan.schema import (
    FID_FEATURES,
    MAX_SAMPLE_SEED,
    MAX_TRAIN_SEED,
    ON_DIVERGENCE,
    PRECISIONS,
    STANDING_BATCH_SIZE,
    STANDING_BATCHES,
    Config,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    migrate_model_section,
)

__all__ = [
    "FID_FEATURES", "MAX_TRAIN_SEED", "MAX_SAMPLE_SEED", "ON_DIVERGENCE", "PRECISIONS", "STANDING_BATCH_SIZE", "STANDING_BATCHES",
    "Config", "ConfigError", "DataConfig", "LossConfig", "ModelConfig", "OptimConfig", "TrainConfig",
    "PRESETS", "RELATIVE_KEYS", "apply_mapping", "config_from_dict", "explicit_model_keys", "load_config",
    "migrate_model_section",
    "parse_override", "place_relative_to_resolution", "preset", "read_folder_as_images", "set_value", "validate",
]

_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


# --------------------------------------------------------------------------- presets

def _fmnist32() -> Config:
    """Class-conditional SAGAN on Fashion-MNIST 32x32, sized for a 2-core CPU demo."""
    return Config(preset="fmnist32", train=TrainConfig(fid_every=1000, channels_last=True))


def _cifar32() -> Config:
    return Config(
        preset="cifar32",
        model=ModelConfig(resolution=32, g_ch=64, d_ch=64, g_attn=[16], d_attn=[16]),
        data=DataConfig(dataset="cifar10"),
        train=TrainConfig(steps=100_000, batch_size=64, ema_decay=0.9999, ema_start=1000,
                          log_every=50, sample_every=1000, ckpt_every=2000, fid_every=5000),
    )


def _imagefolder64() -> Config:
    return Config(
        preset="imagefolder64",
        model=ModelConfig(resolution=64, g_ch=32, d_ch=32, g_attn=[32], d_attn=[32]),
        data=DataConfig(dataset="image_folder", download=False, num_workers=2),
        train=TrainConfig(steps=100_000, batch_size=64, ema_decay=0.9999, ema_start=1000,
                          log_every=50, sample_every=1000, ckpt_every=2000, fid_every=5000),
    )


def _imagenet128() -> Config:
    """The paper's ImageNet 128x128 model: ch=64, attention at 64 in G and D, batch 256."""
    return Config(
        preset="imagenet128",
        model=ModelConfig(resolution=128, g_ch=64, d_ch=64, g_attn=[64], d_attn=[64]),
        data=DataConfig(dataset="image_folder", download=False, num_workers=8),
        train=TrainConfig(steps=1_000_000, batch_size=256, ema_decay=0.9999, ema_start=20_000,
                          log_every=100, sample_every=5000, ckpt_every=5000),
    )


PRESETS = {
    "fmnist32": _fmnist32,
    "cifar32": _cifar32,
    "imagefolder64": _imagefolder64,
    "imagenet128": _imagenet128,
}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r} is not known; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


# --------------------------------------------------------------------------- overrides

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; return the (possibly converted) value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item)} (e.g. [16, 32] or []), got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {tp}")  # pragma: no cover


def _fields(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def set_value(cfg: Config, dotted: str, value: Any) -> None:
    """Set ``section.key`` (or a top-level key) strictly: unknown keys and bad types raise."""
    parts = dotted.split(".")
    obj: Any = cfg
    for i, part in enumerate(parts):
        fields = _fields(obj)
        where = ".".join(parts[:i]) or "the top level"
        if part not in fields:
            raise ConfigError(f"unknown config key {'.'.join(parts[:i + 1])!r}; "
                              f"keys at {where}: {', '.join(sorted(fields))}")
        tp = fields[part]
        is_section = dataclasses.is_dataclass(tp)
        if i < len(parts) - 1:
            if not is_section:
                raise ConfigError(f"config key {'.'.join(parts[:i + 1])!r} is a value, not a section")
            obj = getattr(obj, part)
        else:
            if is_section:
                if not isinstance(value, dict):
                    raise ConfigError(f"{dotted}: is a section; give a mapping or set {dotted}.KEY")
                for k, v in value.items():
                    set_value(cfg, f"{dotted}.{k}", v)
            else:
                setattr(obj, part, _coerce(dotted, value, tp))


def apply_mapping(cfg: Config, mapping: dict[str, Any], prefix: str = "") -> None:
    if not isinstance(mapping, dict):
        raise ConfigError(f"config file must hold a mapping of sections, got {type(mapping).__name__}")
    for k, v in mapping.items():
        if not isinstance(k, str):
            raise ConfigError(f"config keys must be strings, got {k!r}")
        set_value(cfg, prefix + k, v)


def parse_override(text: str) -> tuple[str, Any]:
    """``'optim.lr_d=2e-4'`` -> ``('optim.lr_d', 0.0002)``; values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. optim.lr_d=2e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except Exception:  # noqa: BLE001 - YAMLError, or ValueError for dates like 2020-13-01
        value = raw
    # YAML 1.1 reads "2e-4" (no dot) as a string; accept the usual float spellings.
    if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
        value = float(value)
    return key, value


def load_config(preset_name: str | None = None, file: str | Path | None = None,
                overrides: list[str] | None = None, notes: list[str] | None = None, *,
                name: str | None = None, init_from: str | None = None) -> Config:
    """Preset, then YAML file, then overrides, then ``name`` and ``train.init_from`` when given (as
    they are, not read as YAML); validated once. A resolution other than the preset's moves the
    attention sizes the user did not set with it (``place_relative_to_resolution``), and the line
    saying so is appended to ``notes``."""
    file_data = _read_config_file(file)
    base = preset_name or file_data.get("preset") or "fmnist32"
    if not isinstance(base, str):
        raise ConfigError(f"preset: expected a preset name, got {base!r}")
    cfg = preset(base)
    apply_mapping(cfg, {k: v for k, v in file_data.items() if k != "preset"})
    for text in overrides or []:
        set_value(cfg, *parse_override(text))
    for note in (read_folder_as_images(cfg, _keys_given(file_data, overrides, "data")),
                 place_relative_to_resolution(cfg, preset(base).model, _keys_given(file_data, overrides, "model"))):
        if note and notes is not None:
            notes.append(note)
    if name:
        cfg.name = name  # a plain directory name (no slashes, not empty): validate says so
    if init_from is not None:
        set_value(cfg, "train.init_from", init_from)
    validate(cfg)
    return cfg


def _read_config_file(file: str | Path | None) -> dict[str, Any]:
    """The sections of a YAML config file (empty without one); ConfigError, one line, when it
    cannot be used."""
    if file is None:
        return {}
    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        file_data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text; give a YAML file") from None
    except Exception as e:  # noqa: BLE001 - YAMLError, or ValueError for dates like 2020-13-01
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_first_line(e)}") from None
    if not isinstance(file_data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
    return file_data


def _keys_given(file_data: dict[str, Any], overrides: list[str] | None, section: str) -> set[str]:
    """The keys of ``section`` that a config file's section and the ``--set`` overrides give."""
    given = file_data.get(section)
    keys = set(given) if isinstance(given, dict) else set()
    for text in overrides or []:
        key, value = parse_override(text)
        if key == section and isinstance(value, dict):
            keys |= set(value)
        elif key.startswith(f"{section}."):
            keys.add(key.split(".", 1)[1])
    return keys


def explicit_model_keys(preset_name: str | None, file: str | Path | None, overrides: list[str] | None) -> set[str]:
    """The ``model`` keys a user chose: every one when a preset is named (``preset_name`` or the
    file's ``preset:``), else those of the file's ``model`` section and of ``--set model.*``."""
    every = {f.name for f in dataclasses.fields(ModelConfig)}
    file_data = _read_config_file(file)
    if preset_name or file_data.get("preset"):
        return every
    return _keys_given(file_data, overrides, "model") & every


def read_folder_as_images(cfg: Config, explicit: set[str]) -> str | None:
    """A ``data.root`` folder of image files given with a built-in dataset the user did not choose
    (the preset's Fashion-MNIST or CIFAR-10) is read as an image folder (``data.dataset=image_folder``),
    the rest of the config unchanged: a folder is the data, never replaced by another data set. A folder
    holding the built-in data set's files, or no images, keeps the data set (whose loader refuses a
    folder without its files). ``explicit``: the ``data`` keys the command line or config file set.
    Returns the line saying what was chosen, or None when nothing changed."""
    d = cfg.data
    spec = DATASETS.get(d.dataset)
    if "dataset" in explicit or d.root is None or spec is None or not spec.in_memory:
        return None
    if detect_folder_dataset(d.root) != "image_folder":
        return None
    d.dataset = "image_folder"
    return (f"{d.root} holds image files, not {spec.title}: reading it as an image folder "
            f"(data.dataset=image_folder), the {cfg.preset} model otherwise unchanged")


RELATIVE_KEYS = (("g_attn", g_attention_sizes), ("d_attn", d_attention_sizes),
                 ("g_resblock", g_attention_sizes), ("d_resblock", d_attention_sizes))


def place_relative_to_resolution(cfg: Config, base: ModelConfig, explicit: set[str]) -> str | None:
    """When the resolution differs from the preset's, move the preset's attention (and bottleneck)
    sizes with it, keeping their ratio to the image size (the presets' 16 of 32, 32 of 64: half the
    resolution, the paper's placement), for each of those keys the user did not set. Returns a line
    saying what was placed, or None when nothing moved."""
    m = cfg.model
    if m.resolution == base.resolution or m.resolution not in RESOLUTIONS:
        return None
    moved = []
    for key, allowed in RELATIVE_KEYS:
        if key in explicit:
            continue
        sizes = [s * m.resolution // base.resolution for s in getattr(base, key)]
        sizes = [s for s in sizes if s in allowed(m.resolution)]
        if sizes != getattr(m, key):
            setattr(m, key, sizes)
            moved.append(f"model.{key}={sizes}")
    if not moved:
        return None
    return (f"model.resolution={m.resolution} (the preset's is {base.resolution}): placed {', '.join(moved)}, "
            f"at the preset's sizes relative to the image; set them to choose others")


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a resolved config (from a run directory or a checkpoint), strictly; a ``model``
    section written by an older version is read as it was meant (``migrate_model_section``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a resolved config must be a mapping of sections, got {type(data).__name__}")
    if "model" in data:
        data = {**data, "model": migrate_model_section(data["model"])}
    name = data.get("preset", "fmnist32")
    if not isinstance(name, str):
        raise ConfigError(f"preset: expected a preset name, got {name!r}")
    cfg = preset(name)
    apply_mapping(cfg, {k: v for k, v in data.items() if k != "preset"})
    validate(cfg)
    return cfg


def _first_line(e: Exception) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[:4])[:300] or type(e).__name__


# --------------------------------------------------------------------------- validation

def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate(cfg: Config) -> None:
    """ConfigError naming the first key whose value is not allowed. The model and data sections and
    the loss are checked by the components that use them (``check_model_config``, ``check_data_config``,
    ``check_loss_config``), the rest here; in the order loss, model, data, the run's name, optim, train."""
    m, o, t = cfg.model, cfg.optim, cfg.train
    check_loss_config(cfg.loss)
    check_model_config(m)
    check_data_config(cfg.data)
    _check(cfg.name is None or (cfg.name.strip() not in ("", ".", "..") and not any(c in cfg.name for c in "/\\\0")),
           f"name={cfg.name!r} must be a plain directory name (no slashes, not empty, not . or ..)")
    for key, v in (("optim.lr_g", o.lr_g), ("optim.lr_d", o.lr_d)):
        _check(0 < v < 1, f"{key}={v} must be in (0, 1)")
    for key, v in (("optim.beta1", o.beta1), ("optim.beta2", o.beta2)):
        _check(0 <= v < 1, f"{key}={v} must be in [0, 1)")
    _check(0 < o.eps < 1, f"optim.eps={o.eps} must be in (0, 1)")
    _check(t.steps >= 1, f"train.steps={t.steps} must be >= 1")
    _check(t.steps <= 10**10, f"train.steps={t.steps} must be between 1 and 10**10")
    _check(1 <= t.batch_size <= 1_000_000, f"train.batch_size={t.batch_size} must be >= 1")
    _check(t.n_dis >= 1, f"train.n_dis={t.n_dis} must be >= 1 (D steps per G step)")
    _check(t.n_dis <= 100, f"train.n_dis={t.n_dis} must be between 1 and 100 (D steps per G step)")
    _check(0 <= t.ema_decay < 1, f"train.ema_decay={t.ema_decay} must be in [0, 1)")
    _check(t.ema_start >= 0, f"train.ema_start={t.ema_start} must be >= 0")
    _check(t.ema_bn in BN_MODES, f"train.ema_bn={t.ema_bn!r}; choose one of {list(BN_MODES)}")
    _check(1 <= t.ema_bn_batches <= 10_000, f"train.ema_bn_batches={t.ema_bn_batches} must be between 1 and 10000")
    _check(2 <= t.ema_bn_batch_size <= 65_536,
           f"train.ema_bn_batch_size={t.ema_bn_batch_size} must be between 2 and 65536")
    for key in ("log_every", "sample_every", "ckpt_every", "keep_ckpts", "sample_classes"):
        v = getattr(t, key)
        _check(v >= 1, f"train.{key}={v} must be >= 1")
    _check(0 <= t.seed <= MAX_TRAIN_SEED, f"train.seed={t.seed} must be between 0 and {MAX_TRAIN_SEED}")
    _check(t.on_divergence in ON_DIVERGENCE,
           f"train.on_divergence={t.on_divergence!r}; choose one of {list(ON_DIVERGENCE)}")
    _check(0 < t.rollback_lr_factor <= 1,
           f"train.rollback_lr_factor={t.rollback_lr_factor} must be in (0, 1] (1 keeps the learning rates)")
    _check(0 <= t.max_rollbacks <= 1000, f"train.max_rollbacks={t.max_rollbacks} must be between 0 and 1000")
    _check(t.collapse_window >= 0, f"train.collapse_window={t.collapse_window} must be >= 0 (0 turns it off)")
    _check(t.collapse_d_loss > 0, f"train.collapse_d_loss={t.collapse_d_loss} must be > 0")
    _check(t.precision in PRECISIONS, f"train.precision={t.precision!r}; choose one of {list(PRECISIONS)}")
    _check(t.fid_every >= 0, f"train.fid_every={t.fid_every} must be >= 0 (0 turns training-time FID off)")
    _check(t.fid_samples >= 2, f"train.fid_samples={t.fid_samples} must be >= 2 (a few thousand is typical)")
    _check(t.fid_features in FID_FEATURES,
           f"train.fid_features={t.fid_features!r}; choose one of {list(FID_FEATURES)}")
    _check(t.init_from is None or (t.init_from.strip() != "" and "\0" not in t.init_from),
           f"train.init_from={t.init_from!r} must be a run directory, checkpoint, exported folder or shipped model name")
    n_blocks = len(D_ARCH[m.resolution])
    _check(0 <= t.freeze_d_blocks <= n_blocks,
           f"train.freeze_d_blocks={t.freeze_d_blocks}: the discriminator has {n_blocks} blocks at resolution "
           f"{m.resolution}; choose 0 (off) to {n_blocks}")
    dev = t.device
    _check(dev in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:[0-9]{1,4}", dev) is not None,
           f"train.device={dev!r}; choose auto, cpu, cuda, cuda:N or mps")
