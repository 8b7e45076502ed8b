"""Your own images: flat folders are unconditional data, class folders are classes, loose files
next to class folders are named; the resolution is one choice (attention placed relative to it)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import TINY_STANDING_ARGS, TINY_TRAIN_ARGS, make_image_folder

from sagan.cli import main
from sagan.config import DataConfig
from sagan.data import load_data
from sagan.runs.checkpoints import Checkpoints, load_checkpoint


def _flatten(folder: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    for i, f in enumerate(sorted(folder.rglob("*.png"))):
        shutil.copy(f, out / f"{i:03d}_{f.name}")
    return out


def test_a_flat_folder_is_unconditional_data(tmp_path, tiny_folder):
    flat = _flatten(tiny_folder, tmp_path / "flat")
    (flat / ".hidden.png").write_bytes(b"not read")
    data = load_data(DataConfig(dataset="image_folder", root=str(flat)), 32, conditional=True)
    assert (len(data), data.num_classes, data.class_names) == (16, 0, [])
    assert "16 images directly in it, no class sub-folders: unconditional" in data.source
    image, label = data.folder[3]
    assert tuple(image.shape) == (3, 32, 32) and label == 0 and -1 <= float(image.min()) <= float(image.max()) <= 1


def test_training_on_a_flat_folder_says_it_is_unconditional(tmp_path, tiny_folder, capsys):
    flat = _flatten(tiny_folder, tmp_path / "flat")
    assert main(["train", *TINY_TRAIN_ARGS, "--data", str(flat), "--steps", "1", "--out", str(tmp_path / "runs"),
                 "--name", "u"]) == 0
    out = capsys.readouterr().out
    assert "no class sub-folders: unconditional" in out and "so the model is unconditional" in out
    state = load_checkpoint(Checkpoints(tmp_path / "runs" / "u" / "checkpoints").list()[-1])
    assert state["data"]["num_classes"] == 0


def test_a_small_folder_trains_without_diffaugment_unless_told_to(tmp_path, tiny_folder, capsys):
    """data.diffaugment=auto (the default) resolves when the folder is read: the note says what it chose
    and how to turn DiffAugment on, and the run directory stores the operations, so a resume or a
    report sees what was used."""
    for name, extra, policy in (("auto", [], []),
                                ("on", ["--set", "data.diffaugment=[color,translation,cutout]"],
                                 ["color", "translation", "cutout"])):
        assert main(["train", *TINY_TRAIN_ARGS, "--data", str(tiny_folder), "--steps", "1", *extra,
                     "--out", str(tmp_path / "runs"), "--name", name]) == 0
        out = capsys.readouterr().out
        assert ("note: data.diffaugment=auto: no DiffAugment for 16 images" in out) == (name == "auto")
        assert ("data.diffaugment=[color, translation, cutout] turns it on" in out) == (name == "auto")
        stored = yaml.safe_load((tmp_path / "runs" / name / "config.yaml").read_text())
        assert stored["data"]["diffaugment"] == policy
        state = load_checkpoint(Checkpoints(tmp_path / "runs" / name / "checkpoints").list()[-1])
        assert state["config"]["data"]["diffaugment"] == policy


def test_no_progress_hides_the_folder_scan_bar(tmp_path, tiny_folder, capsys, monkeypatch):
    """The scan of a large folder shows a bar; 'sagan train --no-progress' (a study's runs, logs)
    shows none."""
    import sagan.data.datasets as datasets
    monkeypatch.setattr(datasets, "SCAN_PROGRESS_MIN", 1)  # the tiny folder counts as large
    for name, flags in (("quiet", TINY_TRAIN_ARGS), ("bars", [a for a in TINY_TRAIN_ARGS if a != "--no-progress"])):
        assert main(["train", *flags, "--data", str(tiny_folder), "--steps", "1", "--out", str(tmp_path / "runs"),
                     "--name", name]) == 0
        assert ("scanning images" in capsys.readouterr().err) == (name == "bars")


def test_class_folders_say_conditional_and_loose_files_are_named(tmp_path, caplog):
    root = make_image_folder(tmp_path / "mixed", classes=3, per_class=2)
    shutil.copy(next((root / "class_0").iterdir()), root / "stray.png")
    with caplog.at_level(logging.WARNING):
        data = load_data(DataConfig(dataset="image_folder", root=str(root)), 32, conditional=True)
    assert data.num_classes == 3 and len(data) == 6
    assert "3 class folders: class-conditional" in data.source
    assert "1 file directly in" in caplog.text and "stray.png" in caplog.text


def test_an_empty_folder_says_where_images_go(tmp_path):
    from sagan.errors import DataError
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty: put images in it .*sub-folders are the classes"):
        load_data(DataConfig(dataset="image_folder", root=str(tmp_path / "empty")), 32)


@pytest.mark.parametrize("preset,res,g,d", [("imagefolder64", 32, [16], [16]), ("imagefolder64", 128, [64], [64]),
                                            ("fmnist32", 64, [32], [32]), ("imagenet128", 32, [16], [16])])
def test_attention_moves_with_the_resolution_unless_set(preset, res, g, d):
    from sagan.config import load_config
    notes: list[str] = []
    cfg = load_config(preset, None, [f"model.resolution={res}"], notes)
    assert (cfg.model.g_attn, cfg.model.d_attn) == (g, d)
    assert len(notes) == 1 and f"placed model.g_attn={g}, model.d_attn={d}" in notes[0]
    # What the user set stays as set (and is validated as such).
    cfg = load_config(preset, None, [f"model.resolution={res}", f"model.g_attn=[{res // 4}]"], notes)
    assert (cfg.model.g_attn, cfg.model.d_attn) == ([res // 4], d)
    # The preset's own resolution: nothing moves, nothing is said.
    notes.clear()
    load_config(preset, None, [], notes)
    assert notes == []


def test_train_resolution_flag_prints_the_placement(tmp_path, tiny_folder, capsys):
    args = ["train", "--preset", "imagefolder64", "--resolution", "32", "--data", str(tiny_folder),
            "--set", "model.g_ch=8", "--set", "model.d_ch=8", "--set", "train.batch_size=8", "--steps", "1",
            "--set", "data.num_workers=0", *TINY_STANDING_ARGS, "--no-progress", "--out", str(tmp_path / "runs"),
            "--name", "r32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "model: 32x32, attention in G at [16], in D at [16]" in out
    assert "note: model.resolution=32 (the preset's is 64): placed model.g_attn=[16], model.d_attn=[16]" in out
    import yaml

    from sagan.config import config_from_dict
    cfg = config_from_dict(yaml.safe_load((tmp_path / "runs" / "r32" / "config.yaml").read_text()))
    assert (cfg.model.resolution, cfg.model.g_attn, cfg.model.d_attn) == (32, [16], [16])


def test_run_machines_reads_the_start_and_every_resume(tmp_path):
    import json

    from sagan.runs.folder import run_machines
    from sagan.study.results import machines_line

    assert run_machines(tmp_path) == []  # no version.json
    (tmp_path / "version.json").write_text("{not json")
    assert run_machines(tmp_path) == []
    zen3 = {"processor": "AMD EPYC (family 25, model 1)"}
    record = {"sagan_torch": "0.1.0",  # a start before the machine was recorded, then resumes on two machines
              "resumes": [{"machine": zen3}, {"machine": {"processor": "AMD EPYC (family 26, model 2)"}},
                          {"machine": zen3}, "garbage"]}
    (tmp_path / "version.json").write_text(json.dumps(record))
    assert run_machines(tmp_path) == ["not recorded", zen3["processor"], "AMD EPYC (family 26, model 2)"]
    runs = [{"dir": "/s/runs/none-s0", "machines": ["not recorded", zen3["processor"]]},
            {"dir": "/s/runs/attn8-s0", "machines": [zen3["processor"]]}, {"dir": "/s/runs/res16-s0", "machines": []}]
    line = machines_line(runs)
    assert "AMD EPYC (family 25, model 1): none-s0, attn8-s0; not recorded: none-s0." in line
    assert machines_line([{"dir": "x", "machines": []}]) == "Machines: no run records one yet."


def test_run_history_and_the_study_runs_table_give_each_runs_machines_and_code(tmp_path):
    import json

    from sagan.runs.folder import run_history
    from sagan.study.results import results_markdown, runs_table

    xeon = {"processor": "Intel Xeon (family 6, model 167)", "threads": 2}
    record = {"git_commit": "3bef597439deeaac", "git_dirty": False, "time": "t0",  # started before machines were recorded
              "resumes": [{"git_commit": "3bef597439deeaac", "git_dirty": True, "machine": xeon},
                          {"git_commit": "69b27b0a065b63bd", "git_dirty": False, "machine": {**xeon, "threads": "x"}},
                          {"machine": xeon}, 7]}
    (tmp_path / "version.json").write_text(json.dumps(record))
    history = run_history(tmp_path)
    assert history == [
        {"machine": "not recorded", "threads": None, "commit": "3bef597439deeaac", "dirty": False, "time": "t0"},
        {"machine": xeon["processor"], "threads": 2, "commit": "3bef597439deeaac", "dirty": True, "time": None},
        {"machine": xeon["processor"], "threads": None, "commit": "69b27b0a065b63bd", "dirty": False, "time": None},
        {"machine": xeon["processor"], "threads": 2, "commit": None, "dirty": None, "time": None}]
    runs = [{"dir": "/s/runs/none-s0", "status": "finished", "problem": None, "history": history,
             "seconds": {"train": 3600.0, "evaluate": 90.0}, "metrics": {"endpoint_fid": 4.6143, "fid": 4.1991}},
            {"dir": "/s/runs/attn8-s0", "status": "unfinished", "problem": "trained to step 14 of 4000",
             "history": history[1:2], "seconds": {"train": 60.0}, "metrics": {}},
            {"dir": "/s/runs/attn8-s1", "status": "missing", "problem": "not started (no run directory)",
             "history": [], "seconds": {}, "metrics": {}}]
    table = runs_table({"runs": runs})
    assert table["rows"] == [
        ["none-s0", "finished", f"not recorded; {xeon['processor']}, 2 threads; {xeon['processor']}",
         "3bef597; 3bef597*; 69b27b0; not recorded", "4", "60.0", "1.5", "4.614", "4.199"],
        ["attn8-s0", "unfinished: trained to step 14 of 4000", f"{xeon['processor']}, 2 threads", "3bef597*", "1",
         "1.0", "", "", ""],
        ["attn8-s1", "not started", "", "", "", "", "", "", ""]]
    md = results_markdown({"study": "attention", "description": "d", "spec": {
        "preset": "fmnist32", "config": None, "sets": [], "steps": 4000, "seeds": 2, "fid_samples": 10000,
        "eval_samples": 10000}, "endpoint_steps": [3000, 3500, 4000], "runs": runs, "arms": [], "summary": {},
        "features": None})
    assert "| none-s0 | finished | not recorded; Intel Xeon (family 6, model 167), 2 threads;" in md
    assert "| attn8-s1 | not started |  |" in md and "|---|---|---|---|---:|---:|---:|---:|---:|" in md
