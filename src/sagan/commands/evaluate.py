"""``sagan evaluate``: IS, FID, KID, precision/recall (and class accuracy) of a trained generator.

Metric names carry the extractor when it is not Inception (``fid_fmnist``): :mod:`sagan.metrics.naming`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import sagan
from sagan.commands.common import (MAX_BATCH, MAX_IMAGES, add_device_argument, add_progress_argument,
                                  add_source_arguments, check_memory, check_seed, check_size, check_writable,
                                  load_from_args, parse_truncation, source_of)
from sagan.data.datasets import dataset_spec, to_uint8
from sagan.errors import DataError, MetricsError, UsageError
from sagan.fileio import atomic_write_text
from sagan.metrics.classifier import WEIGHTS_FILE, classifier_info, load_classifier, weights_digest
from sagan.metrics.evaluation import (class_accuracy_applies, extract_features, fake_feature_layers, gather_features,
                                      metrics_from_features, parse_metrics)
from sagan.metrics.extractors import FIDELITY_NAMES, resolve_inception_weights
from sagan.metrics.naming import features_title, metric_keys, metric_label
from sagan.metrics.reference import reference_for
from sagan.train import distributed as dist_utils
from sagan.train.runs import LoadedRun, generate


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="IS / FID / KID / precision-recall of a generator against real data",
        description="Sample a generator (a run's, a checkpoint's, an exported or a shipped one; EMA weights by "
                    "default), extract features with the standard Inception network (torch-fidelity's TF-ported "
                    "weights) or the offline Fashion-MNIST classifier, and compare with the real training (or "
                    "test) images of the dataset it was trained on. Prints a table and writes a JSON record. "
                    "Metrics on the classifier's features are named for it (fid_fmnist, ...) and are not "
                    "comparable with Inception numbers. Reference statistics are cached, see docs/evaluation.md.")
    add_source_arguments(p)
    p.add_argument("-n", "--num-samples", type=int, default=50_000, help="generated images (default 50000)")
    p.add_argument("--metrics", default="is,fid,kid,pr", help="comma-separated: is,fid,kid,pr (default all)")
    p.add_argument("--features", choices=["inception", "fmnist"], default=None,
                   help="feature extractor (default: fmnist for Fashion-MNIST models, inception otherwise)")
    p.add_argument("--split", choices=["train", "test"], default="train", help="real reference split (default train)")
    p.add_argument("--num-real", type=int, default=None,
                   help="use this many real images, a seeded random subset (default: the whole split)")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="Inception weights file (default: $SAGAN_INCEPTION_WEIGHTS, then torch.hub's cache)")
    p.add_argument("--data", metavar="PATH", help="where the model's training dataset is now, if it moved")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--truncation", type=float, metavar="PSI",
                   help="score samples whose latents are truncated to [-PSI, PSI], with batch-norm statistics "
                        "measured under that PSI (docs/sampling.md; default: not truncated)")
    add_device_argument(p)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", metavar="DIR",
                   help="folder for the JSON record, which is named step_<step>-<features>-<split>[-raw].json "
                        "inside (default: eval/ in the run directory, also for its checkpoints; in the exported "
                        "folder; next to a lone checkpoint; in ./pretrained-NAME for --pretrained)")
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
    add("class_accuracy")
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {n:<{width}}  {v}" for n, v in rows)


def output_folder(args: argparse.Namespace, run: LoadedRun) -> Path:
    """``--out`` or the default folder for the JSON record."""
    return Path(args.out) if args.out else run.output_base / "eval"


def cmd_evaluate(args: argparse.Namespace) -> int:
    import dataclasses

    import torch
    import torch_fidelity


    try:
        metrics = parse_metrics(args.metrics)
    except MetricsError as e:
        raise UsageError(f"--metrics {args.metrics!r}: {e}") from None
    if args.num_samples < 2:
        raise UsageError(f"--num-samples {args.num_samples}: must be >= 2")
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
    source_of(args)  # SOURCE or --pretrained, before any process group is set up
    # Under torchrun every process samples and extracts its share; rank 0 gathers the features,
    # computes the metrics and writes the result.
    dist = dist_utils.init_from_env(args.device)
    dist_utils.quiet_non_main(dist)
    say = dist_utils.rank0_print(dist)
    progress = not args.no_progress and dist.is_main
    try:
        device = dist_utils.resolve_device(args.device, dist)  # a torchrun process's own device
    except RuntimeError as e:  # torch.device() of a name it does not know
        raise UsageError(str(e)) from None
    run = load_from_args(args, device)
    res, share = run.G.resolution, -(-args.num_samples // dist.world)  # held in memory (float, then uint8)
    check_memory(share * run.channels * res * res * 9, f"{share} generated images of {res}x{res} px",
                 "use fewer --num-samples (or more processes with torchrun)")
    check_writable(output_folder(args, run))  # every process: one that stopped alone would hang the others
    features = args.features or dataset_spec(run.dataset).features

    # Everything that can fail without compute fails here, before sampling.
    weights = None
    extractor: dict = {"name": features}
    if features == "inception":
        weights = resolve_inception_weights(args.inception_weights)  # InceptionWeightsError: a UsageError
        extractor.update(torch_fidelity=FIDELITY_NAMES[features], weights=str(weights))
    else:
        load_classifier()  # WeightsError (a UsageError) when the weights are missing or not ours
        info = classifier_info()
        extractor.update(torch_fidelity=FIDELITY_NAMES[features], weights=str(WEIGHTS_FILE),
                         weights_sha256_10=weights_digest(), classifier_test_accuracy=info.get("test_accuracy"))
    binary = [m for m in metrics if m != "is"]
    data_cfg = dataclasses.replace(run.cfg.data, root=args.data) if args.data else run.cfg.data
    reference, problem = None, None
    if binary and dist.is_main:  # the real side is rank 0's alone; the others learn whether it is usable
        try:
            reference = reference_for(data_cfg, run.cfg.model.resolution, run.channels, args.split, args.num_real,
                                      progress=progress)
        except DataError as e:
            problem = e
    problem = dist_utils.broadcast_object(None if problem is None else str(problem), dist)
    if problem is not None:
        raise DataError(problem)
    if "kid" in metrics and args.num_samples < 100:
        say(f"note: KID on {args.num_samples} samples is very noisy")
    class_acc = class_accuracy_applies(run.dataset, run.num_classes, features)

    t0 = time.perf_counter()
    shards = f" in {dist.world} processes" if dist.world > 1 else ""
    say(f"evaluating {run.describe()} with {features_title(features)}: {args.num_samples} samples{shards}"
        + (f" against {reference.description}" if reference else ""))
    images, labels = generate(run.G, args.num_samples, None, args.seed, args.batch_size, device,
                              progress=progress, shard=(dist.rank, dist.world), truncation=truncation)
    common = dict(device=device, batch_size=args.batch_size, progress=progress, inception_weights=weights)
    layers = fake_feature_layers(metrics, features, class_acc)
    f1 = extract_features(to_uint8(images), layers, features, **common) if len(images) else {}
    if class_acc and labels is not None:
        f1["labels"] = labels
    f1 = gather_features(f1, dist)
    if not dist.is_main:
        dist_utils.shutdown()
        return 0
    fake_labels = f1.pop("labels", None)
    results = metrics_from_features(f1, reference, metrics, features, fake_labels=fake_labels, **common)
    seconds = time.perf_counter() - t0

    record = {
        "metrics": metric_keys({k: v for k, v in results.items() if k not in ("num_fake", "num_real", "kid_subset_size")},
                               features),
        "num_generated": results["num_fake"], "num_real": results.get("num_real"),
        "kid_subset_size": results.get("kid_subset_size"),
        "extractor": extractor,
        "reference": None if reference is None else {
            "dataset": reference.dataset, "split": reference.split, "resolution": reference.resolution,
            "channels": reference.channels, "num_images": results.get("num_real"), "description": reference.description},
        "model": run.provenance(),
        "seed": args.seed, "truncation": truncation, "seconds": round(seconds, 1), "device": str(device), "processes": dist.world,
        "versions": {"sagan": sagan.__version__, "torch_fidelity": torch_fidelity.__version__, "torch": torch.__version__},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    psi = "" if truncation is None else f"-psi{truncation:g}"
    name = f"step_{run.step:08d}-{features}-{args.split}{'' if run.ema else '-raw'}{psi}.json"
    out = output_folder(args, run) / name
    try:
        atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    except OSError as e:  # the minutes of compute are not lost: the numbers are in the message
        numbers = ", ".join(f"{k} {v:.6g}" for k, v in record["metrics"].items() if isinstance(v, (int, float)))
        raise UsageError(f"could not write {out} ({e.strerror or e}); the results: {numbers}") from None
    ref = f" vs {results['num_real']} real ({args.split})" if "num_real" in results else ""
    print(f"{results['num_fake']} generated{ref}, {features_title(features)}, {seconds:.0f}s:\n"
          f"{metrics_table(results, features)}\nwrote {out}")
    dist_utils.shutdown()
    return 0
