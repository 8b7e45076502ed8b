"""Fine-tuning: a new run that starts from a trained model's weights, and FreezeD.

``sagan train --init-from SOURCE`` (``train.init_from``) starts a new run whose weights come from
SOURCE: a run directory (its newest checkpoint), a checkpoint file, a folder written by
``sagan export``, a Hugging Face Hub id of one (``user/repo``, recorded as ``user/repo@COMMIT``) or a
shipped model name. From a training checkpoint, G starts from the raw
generator, the EMA copy from the EMA generator and D from D, as the source had them when it
stopped. An export holds one generator (normally the EMA one): G and the EMA copy both start from
it and D starts fresh. Optimiser states and the step count always start fresh.

The new run keeps the source's architecture (:func:`fine_tune_model`). When the new data has
another number of classes, every class table (the generator's conditional-BN gains and biases,
the discriminator's projection embedding) keeps the fresh initialisation of the new model and
everything else is loaded (:func:`load_init_weights`). Conditional to unconditional (or the
reverse) and another image channel count are refused (:func:`check_data_fits`).

FreezeD (Mo et al., 2020, "Freeze the Discriminator"): ``train.freeze_d_blocks=K`` keeps the
first K blocks of D, from the input side, fixed (:func:`freeze_d_blocks`). docs/finetuning.md.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sagan.config import Config, ModelConfig, config_from_dict
from sagan.errors import CheckpointError, ConfigError, UsageError, plural
from sagan.models.export import CONFIG_NAME, pretrained_names
from sagan.models.hub import download_export, parse_hub_id
from sagan.runs.checkpoints import load_checkpoint, resolve_checkpoint
from sagan.sampling import load_run

FLAG = "--init-from"
# Model keys that only decide how fresh weights are initialised, never a shape: free to change.
SHAPE_FREE_KEYS = ("init",)
# Keys of the discriminator alone: free to change when the source has no D (an export).
D_ONLY_KEYS = ("d_ch", "d_attn", "d_sn")


@dataclass
class InitWeights:
    """The weights a fine-tuned run starts from, and where they came from."""
    source: str  # what train.init_from records: the checkpoint file, the exported folder or the shipped name
    description: str  # one line for the start-up message
    cfg: Config  # the source's training config; its model section becomes the new run's
    num_classes: int
    channels: int
    G: dict[str, torch.Tensor]
    G_ema: dict[str, torch.Tensor]
    D: dict[str, torch.Tensor] | None  # None: an exported generator, D starts fresh


def read_init_weights(source: str | Path) -> InitWeights:
    """The weights and config of a model source (run directory, checkpoint file, exported folder or
    shipped name), on the CPU; a checkpoint is read once. One-line ``CheckpointError`` otherwise."""
    p = Path(source).expanduser()
    asked, hub_id = str(source), None
    if not p.exists() and asked not in pretrained_names() and parse_hub_id(asked):
        folder = download_export(asked)  # a local path or shipped name of the same spelling wins
        hub_id = f"{parse_hub_id(asked)[0]}@{folder.name}"  # type: ignore[index]  # the snapshot's commit
        source, p = folder, folder  # the downloaded export from here on
    if hub_id is None and (p.is_file() or (p.is_dir() and not (p / CONFIG_NAME).is_file())):
        ckpt = resolve_checkpoint(p)
        state = load_checkpoint(ckpt, map_location="cpu")
        try:
            cfg = config_from_dict(state["config"])
            num_classes, channels = int(state["data"]["num_classes"]), int(state["data"]["channels"])
        except (ConfigError, KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{FLAG} {source}: {ckpt} does not describe its model "
                                  f"({type(e).__name__}: {e})") from None
        best = state.get("best") if isinstance(state.get("best"), dict) else None
        fid = f", tracked FID {best['fid']:.3f}" if best and "fid" in best else ""
        return InitWeights(str(ckpt.resolve()), f"{ckpt} (step {int(state['step'])}{fid})", cfg, num_classes,
                           channels, state["G"], state["G_ema"], state["D"])
    run = load_run(source)  # an exported folder or a shipped name, or the one-line error for anything else
    g = run.G.state_dict()
    if hub_id is not None:
        recorded, described = hub_id, run.describe().replace(str(source), f"{asked} from the Hugging Face Hub", 1)
    else:
        recorded = str(run.checkpoint.resolve()) if run.kind == "export" else str(source)
        described = run.describe()
    return InitWeights(recorded, described, run.cfg, run.num_classes, run.channels, g, g, None)


def fine_tune_model(wanted: ModelConfig, explicit: set[str], init: InitWeights) -> ModelConfig:
    """The new run's ``model`` section: the source's, with the keys the user gave explicitly
    (``explicit``: from --preset, --config or --set) where they keep every shape; a key that
    would change a shape is a ``ConfigError`` naming every such key, before anything is loaded."""
    src = init.cfg.model
    free = set(SHAPE_FREE_KEYS) | (set(D_ONLY_KEYS) if init.D is None else set())
    out = copy.deepcopy(src)
    clashes = []
    for f in dataclasses.fields(ModelConfig):
        if f.name not in explicit:
            continue
        mine, theirs = getattr(wanted, f.name), getattr(src, f.name)
        if f.name in free:
            setattr(out, f.name, copy.deepcopy(mine))
        elif mine != theirs:
            clashes.append(f"model.{f.name}={mine!r} (source {theirs!r})")
    if clashes:
        raise ConfigError(f"{FLAG} {init.source}: a fine-tuned run keeps the source's architecture, but "
                          f"{', '.join(clashes)}; drop {'it' if len(clashes) == 1 else 'them'} from "
                          f"--preset/--config/--set (may change: {', '.join(f'model.{k}' for k in sorted(free))})")
    return out


def check_data_fits(init: InitWeights, num_classes: int, channels: int) -> None:
    """Refuse (one line) data the source's weights cannot be used for: another image channel count,
    or class-conditional on one side and unconditional on the other."""
    if channels != init.channels:
        def name(c: int) -> str:
            return f"{plural(c, 'channel')} ({'grey' if c == 1 else 'RGB'})"
        raise UsageError(f"{FLAG} {init.source}: the source makes images with {name(init.channels)} and the "
                         f"data has {name(channels)}; convert the data with --set data.channels={init.channels}")
    if (init.num_classes > 0) != (num_classes > 0):
        def kind(n: int) -> str:
            return f"class-conditional ({n} classes)" if n else "unconditional"
        raise UsageError(f"{FLAG} {init.source}: the source is {kind(init.num_classes)} and the new run would be "
                         f"{kind(num_classes)}; fine-tuning between conditional and unconditional models is not "
                         "supported (an unconditional run comes from a flat folder, a single class folder or model.conditional=false)")


def class_tables(model: nn.Module) -> list[str]:
    """State-dict prefixes of the per-class tables of ``model``: every ``nn.Embedding`` in G and D is
    one (conditional-BN gain and bias, the discriminator's projection embedding), spectral-norm
    vectors included."""
    return [f"{name}." for name, m in model.named_modules() if isinstance(m, nn.Embedding)]


def load_into(model: nn.Module, state: dict[str, torch.Tensor], what: str, skip: list[str]) -> None:
    """Load ``state`` into ``model`` except the keys under the prefixes ``skip``; every other key must
    be there with the model's shape (``CheckpointError`` naming the first differences otherwise)."""
    def kept(k: str) -> bool:
        return not any(k.startswith(p) for p in skip)
    own = {k: v for k, v in model.state_dict().items() if kept(k)}
    theirs = {k: v for k, v in state.items() if kept(k)}
    problems = [f"missing {k}" for k in sorted(set(own) - set(theirs))[:3]]
    problems += [f"unexpected {k}" for k in sorted(set(theirs) - set(own))[:3]]
    problems += [f"{k}: source {tuple(theirs[k].shape)}, this model {tuple(own[k].shape)}"
                 for k in sorted(set(own) & set(theirs)) if tuple(theirs[k].shape) != tuple(own[k].shape)][:3]
    if problems:
        raise CheckpointError(f"{FLAG}: the source's {what} does not fit this run's model: {'; '.join(problems)}")
    model.load_state_dict(theirs, strict=False)


@torch.no_grad()
def load_init_weights(init: InitWeights, G: nn.Module, G_ema: nn.Module, D: nn.Module, num_classes: int) -> str:
    """Load ``init`` into a freshly built run's G, EMA copy and D; returns the start-up line.

    With another class count the class tables are skipped: they keep the new model's fresh
    initialisation (zero conditional-BN tables; the projection embedding as ``model.init`` makes it).
    """
    reinit = num_classes != init.num_classes
    for what, model, state in (("G", G, init.G), ("EMA generator", G_ema, init.G_ema), ("D", D, init.D)):
        if state is not None:
            load_into(model, state, what, class_tables(model) if reinit else [])
    loaded = ("G, EMA and D loaded" if init.D is not None else
              "G and EMA loaded from the exported generator; D starts fresh (an export holds no discriminator)")
    if reinit:
        loaded += f"; class embeddings re-initialised ({init.num_classes} -> {num_classes} classes)"
    return f"init from {init.description}: {loaded}"


def freeze_d_blocks(D: nn.Module, k: int) -> list[nn.Parameter]:
    """Freeze the first ``k`` blocks of ``D`` (input side, attention layers in them included): FreezeD.

    Their parameters get ``requires_grad=False`` (call this before D is wrapped in DDP, so DDP does
    not wait for their gradients); the generator update restores only the flags it switched off,
    so they stay frozen. The parameters stay in the optimiser (its state dict, hence checkpoints
    and resume, keep their layout whatever ``k`` is); with no gradient Adam leaves them and their
    state untouched. Returns the frozen parameters.
    """
    blocks = D.blocks  # type: ignore[union-attr]
    if not 0 <= k <= len(blocks):
        raise ConfigError(f"train.freeze_d_blocks={k}: the discriminator has {len(blocks)} blocks; "
                          f"choose 0 (off) to {len(blocks)}")
    frozen = [p for stage in blocks[:k] for p in stage.parameters()]
    for p in frozen:
        p.requires_grad_(False)
    return frozen
