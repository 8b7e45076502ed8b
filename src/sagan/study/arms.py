"""What each study varies, and the ``sagan train`` command of every arm x seed.

A study is a base run (``--preset``, ``--config``, ``--set``, like ``sagan train``) and a list of
arms, each a few ``--set`` overrides on top of it; every arm is trained once per seed
(``train.seed`` = 0, 1, ...) as an ordinary run directory ``STUDY/runs/ARM-sSEED``. The first arm
is the baseline the others are compared with.

* ``stabilisation`` (the paper's Figure 3): SN on D only with equal learning rates; SN on G and D,
  equal learning rates; SN on G and D with TTUR (the default). One D step per G step in all.
* ``attention`` (the paper's Table 1): no attention (SNGAN-projection); attention at each
  feature-map size the generator produces up to 64x64 (and in D where D has a map of that size); a
  residual bottleneck of the attention layer's parameter count at the same places. The paper stops
  at 64x64 (feat64 at 128 px); attention over a 128x128 map (16384 positions) is left out.
* ``reduction``: the query/key width C/r of the attention layers, r in 8 (the paper's), 4, 2, 1.
* ``augment``: no augmentation; DiffAugment (color, translation, cutout); DiffAugment and flips
  (for small data sets, e.g. a folder of a few thousand images).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sagan.config import Config, load_config
from sagan.errors import UsageError
from sagan.models.arch import D_ARCH, G_ARCH, d_attention_sizes, g_attention_sizes
from sagan.nn.attention import REDUCTIONS

SPEC_FILE = "study.json"
RUNS_DIR = "runs"
SPEC_FORMAT = 2  # 2: paired arms (models/arch.py own_stream), one layer per arm, the fixed primary endpoint


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...]
    description: str


def _stabilisation(base: Config) -> list[Arm]:
    both = ("train.n_dis=1",)
    equal = "equal rates 1e-4 (an assumption: the paper does not give its non-TTUR rates)"
    return [
        Arm("sn-d", ("model.g_sn=false", "model.d_sn=true", "optim.lr_g=1e-4", "optim.lr_d=1e-4", *both),
            f"SN on D only, {equal}"),
        Arm("sn-gd", ("model.g_sn=true", "model.d_sn=true", "optim.lr_g=1e-4", "optim.lr_d=1e-4", *both),
            f"SN on G and D, {equal}"),
        Arm("sn-gd-ttur", ("model.g_sn=true", "model.d_sn=true", "optim.lr_g=1e-4", "optim.lr_d=4e-4", *both),
            "SN on G and D, TTUR: lr_G 1e-4, lr_D 4e-4"),
        Arm("sn-gd-lr4e-4", ("model.g_sn=true", "model.d_sn=true", "optim.lr_g=4e-4", "optim.lr_d=4e-4", *both),
            "SN on G and D, equal rates 4e-4 (TTUR's D rate for G too)"),
    ]


def _stabilisation_comparisons(arms: list[str]) -> list[Comparison]:
    return [Comparison("sn-gd", "sn-d", "does SN on G help (equal rates 1e-4)?"),
            Comparison("sn-gd-ttur", "sn-gd", "does TTUR's faster D help, against equal rates 1e-4?"),
            Comparison("sn-gd-ttur", "sn-gd-lr4e-4", "does TTUR's slower G help, against equal rates 4e-4?")]


MAX_STUDY_SIZE = 64  # the largest feature map the attention study places a layer at (the paper's feat64)


def _sizes(base: Config) -> tuple[list[int], list[int]]:
    g = [s for s in g_attention_sizes(base.model.resolution) if s <= MAX_STUDY_SIZE]
    return g, d_attention_sizes(base.model.resolution)


def _block_of(specs, size: int) -> int:
    return next(i for i, s in enumerate(specs) if s.resolution == size)  # extra_layer_blocks' "first"


def _attention(base: Config) -> list[Arm]:
    g_sizes, d_sizes = _sizes(base)
    res = base.model.resolution
    none = {"model.g_attn": "[]", "model.d_attn": "[]", "model.g_resblock": "[]", "model.d_resblock": "[]"}

    def arm(name: str, changes: dict[str, str], description: str) -> Arm:
        return Arm(name, tuple(f"{k}={v}" for k, v in {**none, **changes}.items()), description)

    arms = [arm("none", {}, "no attention (SNGAN-projection baseline)")]
    for kind, key, what in (("attn", "attn", "attention"), ("res", "resblock", "residual bottleneck")):
        for s in g_sizes:
            in_d = s in d_sizes
            changes = {f"model.g_{key}": f"[{s}]", **({f"model.d_{key}": f"[{s}]"} if in_d else {})}
            where = f"after G's block {_block_of(G_ARCH[res], s)}"
            where += (f" and D's block {_block_of(D_ARCH[res], s)} ({s}x{s})" if in_d
                      else f" ({s}x{s}; D has no {s}x{s} map)")
            if s == res:
                where += "; G's output layer, not in the paper"
            arms.append(arm(f"{kind}{s}", changes, f"one {what} layer {where}"))
    return arms


def _attention_comparisons(arms: list[str]) -> list[Comparison]:
    out = [Comparison(a, "none", f"does {'attention' if a.startswith('attn') else 'a residual bottleneck'} at "
                                 f"{a[4:] if a.startswith('attn') else a[3:]} help?")
           for a in arms if a != "none"]
    out += [Comparison(f"attn{a[3:]}", a, f"attention against an equal-size residual bottleneck at {a[3:]}")
            for a in arms if a.startswith("res")]
    return out


def _reduction(base: Config) -> list[Arm]:
    m = base.model
    if not m.g_attn and not m.d_attn:
        raise UsageError("the reduction study varies the attention layers' width, and the base run has none "
                         "(model.g_attn and model.d_attn are empty)")
    return [Arm(f"r{r}", (f"model.attn_reduction={r}",), f"query/key width C/{r}" + (" (the paper's)" if r == 8 else ""))
            for r in sorted(REDUCTIONS, reverse=True)]


def _augment(base: Config) -> list[Arm]:
    full = "[color,translation,cutout]"
    return [Arm("off", ("data.diffaugment=[]", "data.hflip=false"), "no augmentation"),
            Arm("diffaugment", (f"data.diffaugment={full}", "data.hflip=false"),
                "DiffAugment color, translation, cutout on D's inputs"),
            Arm("diffaugment-hflip", (f"data.diffaugment={full}", "data.hflip=true"),
                "DiffAugment and random left-right flips of the real images")]


@dataclass(frozen=True)
class Comparison:
    """``arm`` against ``reference``, paired by seed (``sagan.study.stats``), and the question it answers."""
    arm: str
    reference: str
    question: str


def _against_first(arms: list[str]) -> list[Comparison]:
    return [Comparison(a, arms[0], f"{a} against {arms[0]}") for a in arms[1:]]


# The comparisons a study is planned for, before its runs (the primary endpoint's p-values are
# Holm-adjusted across them); studies without a plan compare every arm with the first.
COMPARISONS: dict[str, Callable[[list[str]], list[Comparison]]] = {
    "stabilisation": _stabilisation_comparisons,
    "attention": _attention_comparisons,
}

STUDIES: dict[str, tuple[Callable[[Config], list[Arm]], str]] = {
    "stabilisation": (_stabilisation, "which stabilisers matter: SN on D only / SN on G and D / + TTUR"),
    "attention": (_attention, "where attention helps: none / attention at each size / equal-size residual block"),
    "reduction": (_reduction, "the attention layers' query/key width C/8, C/4, C/2, C/1"),
    "augment": (_augment, "small data: no augmentation / DiffAugment / DiffAugment and flips"),
}


@dataclass
class StudySpec:
    """Everything that defines a study's runs; stored as ``study.json`` in the study folder."""

    kind: str
    out: str
    preset: str | None = None
    config: str | None = None
    sets: list[str] = field(default_factory=list)
    seeds: int = 2
    steps: int | None = None  # None: the base config's train.steps
    fid_every: int | None = None  # None: steps // 8
    eval_samples: int = 10_000
    fid_samples: int = 10_000  # samples of every training-time FID (fixed latents): the primary endpoint's
    endpoint_evals: int = 3  # the primary endpoint: training-time FID averaged over the last this many evaluations
    eval_features: str | None = None  # sagan evaluate --features (None: its default for the dataset)
    arms_only: list[str] | None = None  # a subset of the arms, in this order (None: all; the first is the baseline)

    def base_config(self) -> Config:
        return load_config(self.preset, self.config, list(self.sets))

    @property
    def total_steps(self) -> int:
        return self.steps if self.steps is not None else self.base_config().train.steps

    @property
    def fid_interval(self) -> int:
        return self.fid_every if self.fid_every is not None else max(1, self.total_steps // 8)

    @property
    def endpoint_steps(self) -> list[int]:
        """The steps whose training-time FIDs the primary endpoint averages (fixed before the runs)."""
        last = self.total_steps - self.total_steps % self.fid_interval
        return [last - k * self.fid_interval for k in reversed(range(self.endpoint_evals))]

    def comparisons(self) -> list[Comparison]:
        """The planned comparisons whose arms are both in the study (every arm against the first otherwise)."""
        names = [a.name for a in self.arms()]
        plan = [c for c in COMPARISONS.get(self.kind, _against_first)(names) if c.arm in names and c.reference in names]
        return plan or _against_first(names)

    def all_arms(self) -> list[Arm]:
        return STUDIES[self.kind][0](self.base_config())

    def arms(self) -> list[Arm]:
        """The study's arms (``arms_only`` of them when given); the first is the baseline."""
        every = self.all_arms()
        if self.arms_only is None:
            return every
        by_name = {a.name: a for a in every}
        return [by_name[n] for n in self.arms_only]

    def arm(self, name: str) -> Arm:
        for a in self.arms():
            if a.name == name:
                return a
        raise UsageError(f"study {self.kind} has no arm {name!r}; its arms: {[a.name for a in self.arms()]}")

    @property
    def runs_dir(self) -> Path:
        return Path(self.out) / RUNS_DIR

    def runs(self) -> list[tuple[Arm, int]]:
        """Every arm x seed, seed-major (every arm of seed 0 first): the paired comparisons grow a seed at a
        time while a long study runs."""
        return [(a, s) for s in range(self.seeds) for a in self.arms()]

    @staticmethod
    def run_name(arm: Arm, seed: int) -> str:
        return f"{arm.name}-s{seed}"

    def run_dir(self, arm: Arm, seed: int) -> Path:
        return self.runs_dir / self.run_name(arm, seed)

    def overrides(self, arm: Arm, seed: int) -> list[str]:
        """The ``--set`` overrides of one run, in order: the base's, the arm's, then seed, steps and FID interval."""
        return [*self.sets, *arm.overrides, f"train.seed={seed}", f"train.steps={self.total_steps}",
                f"train.fid_every={self.fid_interval}", f"train.fid_samples={self.fid_samples}"]

    def config_of(self, arm: Arm, seed: int) -> Config:
        """The resolved config the run of ``arm`` x ``seed`` trains with."""
        return load_config(self.preset, self.config, self.overrides(arm, seed))

    def train_command(self, arm: Arm, seed: int) -> list[str]:
        """The ``sagan train`` command that starts this run (what ``--list`` prints)."""
        cmd = ["sagan", "train"]
        if self.preset:
            cmd += ["--preset", self.preset]
        if self.config:
            cmd += ["--config", self.config]
        for o in self.overrides(arm, seed):
            cmd += ["--set", o]
        return cmd + ["--out", str(self.runs_dir), "--name", self.run_name(arm, seed), "--no-progress"]

    def evaluate_command(self, arm: Arm, seed: int) -> list[str]:
        """The ``sagan evaluate`` command that scores a finished run (``collect`` runs it when needed)."""
        features = ["--features", self.eval_features] if self.eval_features else []
        return ["sagan", "evaluate", str(self.run_dir(arm, seed)), "-n", str(self.eval_samples), *features,
                "--no-progress"]

    def check(self) -> None:
        """One-line errors for a study that cannot run, before anything is written."""
        if self.kind not in STUDIES:
            raise UsageError(f"study {self.kind!r} is not known; choose one of {sorted(STUDIES)}")
        if not 1 <= self.seeds <= 100:
            raise UsageError(f"--seeds {self.seeds}: choose 1..100")
        if self.steps is not None and self.steps < 1:
            raise UsageError(f"--steps {self.steps}: must be >= 1")
        if self.fid_every is not None and self.fid_every < 1:
            raise UsageError(f"--fid-every {self.fid_every}: must be >= 1")
        if self.eval_samples < 2:
            raise UsageError(f"--eval-samples {self.eval_samples}: must be >= 2")
        if self.fid_samples < 2:
            raise UsageError(f"--fid-samples {self.fid_samples}: must be >= 2")
        if not 1 <= self.endpoint_evals <= self.total_steps // self.fid_interval:
            raise UsageError(f"--endpoint-evals {self.endpoint_evals}: the runs evaluate FID "
                             f"{self.total_steps // self.fid_interval} times (every {self.fid_interval} of "
                             f"{self.total_steps} steps); choose 1..{self.total_steps // self.fid_interval}")
        if self.eval_features not in (None, "inception", "fmnist"):
            raise UsageError(f"--features {self.eval_features}: choose inception or fmnist")
        if self.arms_only is not None:
            names = [a.name for a in self.all_arms()]
            unknown = [n for n in self.arms_only if n not in names]
            if unknown or not self.arms_only or len(set(self.arms_only)) != len(self.arms_only):
                raise UsageError(f"--arms {','.join(self.arms_only)}: the {self.kind} study's arms are "
                                 f"{', '.join(names)} (each at most once)")
        for arm in self.arms():  # every arm's config is valid (ConfigError names the key)
            self.config_of(arm, 0)

    # ------------------------------------------------------------------ study.json
    def to_json(self) -> dict[str, Any]:
        return {"format": SPEC_FORMAT, **dataclasses.asdict(self)}

    def extends(self, stored: "StudySpec") -> list[str]:
        """What this spec adds to the ``stored`` one when it holds every run of it unchanged (more seeds,
        more arms, the same baseline): e.g. ``["seeds 2 -> 3"]``; empty when they define the same runs.
        Raises UsageError naming the settings that differ otherwise (a study's finished runs are kept)."""
        a, b = dataclasses.asdict(self), dataclasses.asdict(stored)
        differ = [k for k in a if k not in ("out", "seeds", "arms_only") and a[k] != b[k]]
        mine, theirs = [x.name for x in self.arms()], [x.name for x in stored.arms()]
        if self.seeds < stored.seeds:
            differ.append("seeds")
        if not set(theirs) <= set(mine) or mine[0] != theirs[0]:
            differ.append("arms_only")
        if differ:
            raise UsageError(f"{self.out} holds a different study ("
                             + "; ".join(f"{k}: {a[k]!r} here, {b[k]!r} in the folder" for k in differ)
                             + "); use another --out, or the same settings to continue it (more --seeds or "
                               "--arms, with the same baseline arm, extend it)")
        added = [f"seeds {stored.seeds} -> {self.seeds}"] if self.seeds > stored.seeds else []
        new_arms = [n for n in mine if n not in theirs]
        return added + ([f"arms + {','.join(new_arms)}"] if new_arms else [])


def read_spec(folder: str | Path) -> StudySpec:
    """The study stored in ``folder/study.json``; a one-line error when there is none or it is damaged."""
    path = Path(folder) / SPEC_FILE
    if not path.is_file():
        raise UsageError(f"{folder} is not a study folder (no {SPEC_FILE}); start one with 'sagan study KIND --out "
                         f"{folder}' or 'sagan study KIND --list --out {folder}'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        fmt = data.pop("format", None)
        if fmt == 1:
            raise ValueError("written by a version before paired arms (format 1): its runs do not start from the "
                             "same weights; start the study in a new --out")
        if fmt != SPEC_FORMAT:
            raise ValueError(f"format {fmt!r}, this version reads {SPEC_FORMAT}")
        data["out"] = str(folder)  # the folder may have moved since
        spec = StudySpec(**data)
    except (OSError, ValueError, TypeError) as e:
        raise UsageError(f"{path} cannot be read: {str(e).splitlines()[0][:200]}") from None
    spec.check()
    return spec
