"""Fine-tuning (``sagan train --init-from``) and FreezeD (``train.freeze_d_blocks``).

The weights a run starts with are read where the CLI leaves them: ``Trainer.fit`` is wrapped to
copy G, the EMA generator and D as training begins (after any init), then runs unchanged.
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_TRAIN_ARGS, make_image_folder

from sagan.cli import main
from sagan.config import config_from_dict, load_config
from sagan.errors import ConfigError
from sagan.models import build_models
from sagan.models.export import WEIGHTS_NAME
from sagan.runs.checkpoints import Checkpoints, load_checkpoint, resolve_checkpoint
from sagan.train.finetune import (
    class_tables,
    fine_tune_model,
    load_init_weights,
    read_init_weights,
)
from sagan.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder3(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data3") / "three", classes=3, seed=1)


@pytest.fixture
def start_weights(monkeypatch) -> dict:
    """Filled with CPU copies of G, G_ema and D as the CLI's trainer starts fitting."""
    seen: dict = {}
    fit = Trainer.fit

    def recording_fit(self):
        for name, model in (("G", self.gan.G), ("G_ema", self.gan.ema.shadow), ("D", self.gan.D)):
            seen[name] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    return seen


def _train(data: Path, out: Path, *extra: str, steps: int = 2, name: str = "ft") -> int:
    return main(["train", *TINY_TRAIN_ARGS, "--data", str(data), "--steps", str(steps), "--out", str(out),
                 "--name", name, *extra])


def _under(key: str, prefixes: list[str]) -> bool:
    return any(key.startswith(p) for p in prefixes)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("sagan train: error: "), err
    return lines[0]


# --------------------------------------------------------------------------- loading the weights

def test_load_init_weights_keeps_fresh_class_tables_and_loads_the_rest(tiny_run):
    init = read_init_weights(tiny_run)
    state = load_checkpoint(resolve_checkpoint(tiny_run))
    assert init.source == str(resolve_checkpoint(tiny_run).resolve()) and init.num_classes == 2
    torch.manual_seed(0)
    g, d = build_models(init.cfg.model, 3, 3)
    g_ema = copy.deepcopy(g)
    fresh = {"G": copy.deepcopy(g.state_dict()), "D": copy.deepcopy(d.state_dict())}
    line = load_init_weights(init, g, g_ema, d, num_classes=3)
    assert line.startswith(f"init from {resolve_checkpoint(tiny_run)} (step 4): G, EMA and D loaded")
    assert line.endswith("class embeddings re-initialised (2 -> 3 classes)")
    for name, model, source in (("G", g, state["G"]), ("G_ema", g_ema, state["G_ema"]), ("D", d, state["D"])):
        tables = class_tables(model)
        assert tables, name
        for k, v in model.state_dict().items():
            if _under(k, tables):
                assert torch.equal(v, fresh[name[0]][k]), (name, k)  # the fresh model's initialisation
                if k.endswith("weight") or k.endswith("original"):
                    assert v.shape[0] == 3, (name, k)
            else:
                assert torch.equal(v, source[k]), (name, k)
    # CBN tables start at zero (plain BN); D's projection embedding as model.init makes it, not zero.
    assert all(not v.any() for k, v in g.state_dict().items() if _under(k, class_tables(g)))
    assert d.embed.parametrizations.weight.original.abs().sum() > 0


def test_fine_tune_model_takes_the_source_architecture_and_names_every_clash(tiny_run):
    init = read_init_weights(tiny_run)
    wanted = load_config(None, None, ["model.g_ch=32", "model.resolution=64", "model.init=xavier"]).model
    with pytest.raises(ConfigError) as info:
        fine_tune_model(wanted, {"g_ch", "resolution", "init"}, init)
    msg = str(info.value)
    assert "model.g_ch=32 (source 8)" in msg and "model.resolution=64 (source 32)" in msg and "init=" not in msg.split(";")[0]
    assert "\n" not in msg
    # Keys not given explicitly come from the source; model.init may change.
    model = fine_tune_model(wanted, {"init"}, init)
    assert (model.g_ch, model.d_ch, model.resolution, model.init) == (8, 8, 32, "xavier")


# --------------------------------------------------------------------------- the command

def test_finetune_onto_more_classes_with_freezed(tmp_path, tiny_run, folder3, start_weights, capsys):
    before = _snapshot(tiny_run)
    assert _train(folder3, tmp_path, "--init-from", str(tiny_run), "--set", "train.freeze_d_blocks=2") == 0
    out = capsys.readouterr().out
    ckpt = resolve_checkpoint(tiny_run)
    assert (f"init from {ckpt} (step 4): G, EMA and D loaded; class embeddings re-initialised (2 -> 3 classes)"
            in out)
    assert "FreezeD: the first 2 of 4 discriminator blocks are frozen" in out
    source = load_checkpoint(ckpt)
    g, d = build_models(config_from_dict(source["config"]).model, 3, 3)
    tables = {"G": class_tables(g), "G_ema": class_tables(g), "D": class_tables(d)}
    for name in ("G", "G_ema", "D"):
        start = start_weights[name]
        assert set(start) == set(source[name])
        for k, v in start.items():
            if not _under(k, tables[name]):
                assert torch.equal(v, source[name][k]), (name, k)
    assert start_weights["G"]["blocks.0.0.bn1.gain.weight"].shape[0] == 3
    assert start_weights["D"]["embed.parametrizations.weight.original"].shape[0] == 3
    run = tmp_path / "ft"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["init_from"] == str(ckpt.resolve())
    assert cfg["model"] == yaml.safe_load((tiny_run / "config.yaml").read_text())["model"]
    end = load_checkpoint(resolve_checkpoint(run))
    assert end["data"]["num_classes"] == 3 and end["step"] == 2
    assert _snapshot(tiny_run) == before  # the source is only read
    # FreezeD: D's first two blocks (attention in block 0 included) kept the source's values; the rest trained.
    params = [k for k, _ in d.named_parameters()]
    frozen = [k for k in params if k.startswith(("blocks.0.", "blocks.1."))]
    trained = [k for k in params if k.startswith(("blocks.2.", "blocks.3.", "linear.", "embed."))]
    assert len(frozen) + len(trained) == len(params) and "blocks.0.1.gamma" in frozen
    assert all(torch.equal(end["D"][k], source["D"][k]) for k in frozen)
    # The rest had a gradient at both steps: Adam stepped each of them twice, and only them (the frozen
    # parameters never had a gradient, so Adam kept no state for them). Whether their values moved
    # depends on the data: the hinge loss can saturate in a run this small (D's loss exactly 0 at both
    # steps on an Intel Xeon: every gradient 0), so the test asks for the steps, not for a change.
    states = list(end["opt_d"]["state"].values())
    assert len(states) == len(trained) and all(int(st["step"]) == 2 for st in states)


def test_finetune_same_classes_loads_everything(tmp_path, tiny_run, tiny_folder, start_weights, capsys):
    assert _train(tiny_folder, tmp_path, "--init-from", str(tiny_run), steps=1) == 0
    out = capsys.readouterr().out
    assert "G, EMA and D loaded\n" in out and "re-initialised" not in out and "FreezeD" not in out
    source = load_checkpoint(resolve_checkpoint(tiny_run))
    for name in ("G", "G_ema", "D"):
        assert set(start_weights[name]) == set(source[name])
        for k, v in start_weights[name].items():
            assert torch.equal(v, source[name][k]), (name, k)


def test_freezed_without_init_from(tmp_path, tiny_folder, start_weights, capsys):
    assert _train(tiny_folder, tmp_path, "--set", "train.freeze_d_blocks=1") == 0
    end = load_checkpoint(resolve_checkpoint(tmp_path / "ft"))
    start = start_weights["D"]
    d = build_models(config_from_dict(end["config"]).model, 2, 3)[1]
    params = [k for k, _ in d.named_parameters()]
    assert all(torch.equal(end["D"][k], start[k]) for k in params if k.startswith("blocks.0."))
    assert any(not torch.equal(end["D"][k], start[k]) for k in params if k.startswith("blocks.1."))
    assert yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())["train"]["freeze_d_blocks"] == 1


def test_freeze_more_blocks_than_d_has_is_refused(tmp_path, tiny_folder, capsys):
    assert _train(tiny_folder, tmp_path / "runs", "--set", "train.freeze_d_blocks=5") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "train.freeze_d_blocks=5: the discriminator has 4 blocks" in line
    assert not (tmp_path / "runs").exists()


def test_finetune_from_an_export_starts_d_fresh(tmp_path, tiny_run, tiny_folder, start_weights, capsys):
    export = tmp_path / "exp"
    assert main(["export", str(tiny_run), "--out", str(export)]) == 0
    capsys.readouterr()
    assert _train(tiny_folder, tmp_path / "runs", "--init-from", str(export)) == 0
    out = capsys.readouterr().out
    assert f"init from exported model {export} (step 4, EMA generator, standing BN statistics): G and EMA loaded from the exported " \
           "generator; D starts fresh (an export holds no discriminator)" in out
    from safetensors.torch import load_file
    exported = load_file(str(export / WEIGHTS_NAME))
    for name in ("G", "G_ema"):
        assert set(start_weights[name]) == set(exported)
        assert all(torch.equal(v, exported[k]) for k, v in start_weights[name].items()), name
    # D is what a fresh run builds (same seed), not the source's D.
    cfg = config_from_dict(yaml.safe_load((tmp_path / "runs" / "ft" / "config.yaml").read_text()))
    assert cfg.train.init_from == str(export.resolve())
    torch.manual_seed(cfg.train.seed)
    fresh_d = build_models(cfg.model, 2, 3)[1].state_dict()
    assert all(torch.equal(v, fresh_d[k]) for k, v in start_weights["D"].items())
    source_d = load_checkpoint(resolve_checkpoint(tiny_run))["D"]
    assert not torch.equal(start_weights["D"]["linear.parametrizations.weight.original"],
                           source_d["linear.parametrizations.weight.original"])


def test_resume_of_a_finetuned_run_uses_its_own_checkpoints(tmp_path, tiny_run, folder3, capsys):
    source = tmp_path / "source"
    shutil.copytree(tiny_run, source)
    assert _train(folder3, tmp_path / "runs", "--init-from", str(source)) == 0
    run = tmp_path / "runs" / "ft"
    # A run stopped before its first checkpoint starts again from the source, not from scratch.
    early = tmp_path / "early"
    shutil.copytree(run, early)
    for ckpt in Checkpoints(early / "checkpoints").list():
        ckpt.unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(early), "--steps", "1", "--no-progress"]) == 0
    assert "init from " in capsys.readouterr().out
    shutil.rmtree(source)  # a resume from a checkpoint must not need it
    assert main(["train", "--resume", str(run), "--steps", "4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "init from" not in out and f"resuming {run} from step 2" in out
    assert [p.name for p in Checkpoints(run / "checkpoints").list()][-1] == "ckpt_00000004.pt"


@pytest.mark.parametrize("case, expected", [
    ("missing", "no such run directory, checkpoint file or exported model"),
    ("resolution", "model.resolution=64 (source 32)"),
    ("channels", "the source makes images with 3 channels (RGB) and the data has 1 channel (grey)"),
    ("unconditional", "the source is class-conditional (2 classes) and the new run would be unconditional"),
    ("resume", "give one of them"),
])
def test_bad_init_sources_exit_2_before_a_run_directory(tmp_path, tiny_run, tiny_folder, capsys, case, expected):
    data, extra = tiny_folder, ["--init-from", str(tiny_run)]
    if case == "missing":
        extra = ["--init-from", str(tmp_path / "nope")]
    elif case == "resolution":
        extra += ["--set", "model.resolution=64"]
    elif case == "channels":
        extra += ["--set", "data.channels=1"]
    elif case == "unconditional":
        data = make_image_folder(tmp_path / "one", classes=1)
    elif case == "resume":
        extra += ["--resume", str(tiny_run)]
    before = _snapshot(tiny_run)
    assert _train(data, tmp_path / "runs", *extra) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert expected in line, line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert _snapshot(tiny_run) == before
