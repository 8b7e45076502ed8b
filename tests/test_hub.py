"""Hugging Face Hub ids in the CLI, `sagan push`, and the model card of save_pretrained/push_to_hub
(issue 26, item 3). No test reaches the network: the Hub is offline, a closed local port, a stalled
stand-in, or a mocked ``HfApi``; a cached model is laid out by hand in a temporary cache."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import ModelCard, constants

from sagan import Generator
from sagan.cli import main
from sagan.commands.loading import resolve_source
from sagan.errors import EXIT_USAGE, CheckpointError
from sagan.models.export import CONFIG_NAME, PRETRAINED_DIR, WEIGHTS_NAME, model_card, read_config
from sagan.models.hub import download_export, parse_hub_id
from sagan.train.finetune import read_init_weights

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SHIPPED = PRETRAINED_DIR / "fmnist32"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed: connections are refused at once


def _cache_with_model(hf_home: Path, repo: str = "user/repo") -> Path:
    """huggingface_hub's cache layout (hub/models--USER--REPO/{refs/main, snapshots/COMMIT/}) holding
    the shipped export, as a finished snapshot_download leaves it."""
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copy(SHIPPED / name, snapshot / name)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A temporary HF cache with user/repo in it, for in-process calls (HF_HUB_CACHE is read at import)."""
    snapshot = _cache_with_model(tmp_path / "hf")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return snapshot


@pytest.fixture
def unreachable_hub(monkeypatch):
    """Online mode, with the Hub at a closed local port."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")


def _run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sagan", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env}, cwd=cwd)


def test_hub_ids_are_told_from_paths():
    assert parse_hub_id("user/repo") == ("user/repo", None)
    assert parse_hub_id("org-x/sagan.fmnist_32@v1.0") == ("org-x/sagan.fmnist_32", "v1.0")
    for path in ("./runs/x", "/abs/run", "~/x/y", "runs/a/b", "fmnist32", "a/../b", "x/", "/x", "a/b@", "a b/c"):
        assert parse_hub_id(path) is None, path


# --------------------------------------------------------------------------- offline: one line, at once

@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "closed port"])
def test_an_unreachable_hub_is_one_line_at_once(offline, tmp_path, monkeypatch, capsys, request):
    if offline == "closed port":
        request.getfixturevalue("unreachable_hub")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    for args in (["sample", "user/repo", "-n", "2"], ["sample", "--pretrained", "user/repo", "-n", "2"],
                 ["export", "user/repo"], ["train", "--init-from", "user/repo", "--steps", "1"]):
        start = time.perf_counter()
        rc = main(args)
        took = time.perf_counter() - start
        err = capsys.readouterr().err
        assert rc == EXIT_USAGE and len(err.strip().splitlines()) == 1, (args, err)
        assert "user/repo is not a local folder, and not in the Hugging Face Hub cache" in err, err
        assert ("HF_HUB_OFFLINE is set" if offline == "HF_HUB_OFFLINE" else "cannot be reached") in err
        assert "no such run directory" not in err and "Traceback" not in err
        assert took < 5, (args, took)


def test_a_stalled_hub_is_given_up_after_the_timeout(monkeypatch, tmp_path):
    """A network that swallows packets (or a DNS lookup that hangs): the first request is bounded."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, *a, **k: time.sleep(60))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="cannot be reached .no answer within 0.5 s"):
        download_export("user/repo", timeout=0.5)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "closed"}])
def test_the_command_as_typed_fails_in_one_line_with_no_network(env, tmp_path):
    env = {k: (f"http://127.0.0.1:{_closed_port()}" if v == "closed" else v) for k, v in env.items()}
    proc = _run_cli(["sample", "someone/no-such-model", "-n", "2"], dict(env, HF_HOME=str(tmp_path / "hf")), tmp_path)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sagan sample: error: someone/no-such-model is not a local folder")


# --------------------------------------------------------------------------- a cached model works offline

def test_a_cached_model_works_offline(tmp_path):
    _cache_with_model(tmp_path / "hf")
    proc = _run_cli(["sample", "user/repo", "--seeds", "0-3", "--format", "png", "--no-progress"],
                    {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "user/repo from the Hugging Face Hub" in proc.stdout
    assert len(list((tmp_path / "hub-user--repo").rglob("seed*.png"))) == 4  # written here, not into the cache
    assert not list((tmp_path / "hf").rglob("samples_out"))


def test_cached_models_load_everywhere_a_model_is_named(hub_cache, unreachable_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_source("user/repo") == (str(hub_cache), "user/repo")
    assert main(["sample", "--pretrained", "user/repo", "-n", "2", "--out", str(tmp_path / "s")]) == 0
    init = read_init_weights("user/repo")
    assert init.source == f"user/repo@{COMMIT}" and "user/repo from the Hugging Face Hub" in init.description
    assert read_init_weights(init.source).source == init.source  # a resumed fine-tune finds the same commit
    G = Generator.from_pretrained("user/repo")
    assert G.num_classes == 10 and not G.training


def test_a_local_path_wins_over_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(SHIPPED, tmp_path / "user" / "repo")
    assert resolve_source("user/repo") == ("user/repo", None)  # no Hub request at all (HF_HUB_OFFLINE is set)


def test_a_hub_repo_that_is_not_an_export_is_named(tmp_path, monkeypatch):
    snapshot = _cache_with_model(tmp_path / "hf")
    (snapshot / WEIGHTS_NAME).unlink()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(CheckpointError, match="is not a sagan export .no model.safetensors"):
        download_export("user/repo")


# --------------------------------------------------------------------------- sagan push

class FakeHfApi:
    """Records what would be published; the folder is read while it exists (push uploads a temp folder)."""
    calls: list = []

    def __init__(self, token=None, **kw):
        self.token = token

    def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False, **kw):
        FakeHfApi.calls.append(("create_repo", repo_id, private, exist_ok))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, repo_id, folder_path, repo_type=None, commit_message=None, revision=None, **kw):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        FakeHfApi.calls.append(("upload_folder", repo_id, commit_message, revision, files))
        return f"https://huggingface.co/{repo_id}/commit/abc"


@pytest.fixture
def fake_hub(monkeypatch):
    FakeHfApi.calls = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(huggingface_hub.hub_mixin, "HfApi", FakeHfApi)
    return FakeHfApi


def _card(files: dict[str, bytes]) -> ModelCard:
    return ModelCard(files["README.md"].decode())


def test_push_publishes_an_export_with_its_card(fake_hub, tiny_run, capsys):
    assert main(["push", str(tiny_run), "me/tiny-sagan", "--private", "--license", "cc-by-4.0"]) == 0
    (create, repo, private, exist_ok), upload = fake_hub.calls[0], fake_hub.calls[1]
    assert (create, repo, private, exist_ok) == ("create_repo", "me/tiny-sagan", True, True)
    files = upload[4]
    assert sorted(files) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    card = _card(files)
    assert card.data.library_name == "sagan-torch" and card.data.license == "cc-by-4.0"
    assert "sagan" in card.data.tags and "[More Information Needed]" not in card.text
    assert b'"license": "cc-by-4.0"' in files[CONFIG_NAME]
    out = capsys.readouterr().out
    assert "https://huggingface.co/me/tiny-sagan" in out and "sagan sample me/tiny-sagan" in out


def test_push_of_the_shipped_model_names_data_and_metric(fake_hub, tmp_path, capsys):
    assert main(["push", "--pretrained", "fmnist32", "me/fmnist32", "--out", str(tmp_path / "kept")]) == 0
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    card = _card(fake_hub.calls[1][4])
    assert card.data.license == "mit" and card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert card.data.metrics == ["fid"]
    fid = card.data.eval_results[0]
    assert fid.metric_type == "fid" and fid.metric_config == "fmnist" and "fmnist features" in fid.metric_name
    assert fid.dataset_name == "Fashion-MNIST"


@pytest.mark.parametrize("args, message", [
    (["push", "--pretrained", "fmnist32", "not a repo"], "not a Hugging Face Hub repository id"),
    (["push", "--pretrained", "fmnist32", "me/x@dev"], "not a Hugging Face Hub repository id"),
    (["push", "me/x"], "give a SOURCE"),
    (["push", "--pretrained", "fmnist32", "me/x", "--out", "."], "--out . exists"),
])
def test_push_refuses_bad_arguments_in_one_line(fake_hub, args, message, capsys):
    assert main(args) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not fake_hub.calls


def test_push_offline_is_one_line(capsys):
    assert main(["push", "--pretrained", "fmnist32", "me/x"]) == EXIT_USAGE  # the suite runs with HF_HUB_OFFLINE=1
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err


# --------------------------------------------------------------------------- the card from Python

def test_save_pretrained_and_push_to_hub_write_the_export_card(fake_hub, tmp_path):
    G = Generator.from_pretrained("fmnist32")
    G.save_pretrained(tmp_path / "saved")
    card = (tmp_path / "saved" / "README.md").read_text()
    assert card == model_card(read_config(tmp_path / "saved"))  # what `sagan export` writes for this config
    assert "[More Information Needed]" not in card and ModelCard(card).data.license == "mit"
    G.push_to_hub("me/from-python")
    assert fake_hub.calls[-1][4]["README.md"].decode() == card
    fresh = Generator(resolution=32, ch=8, num_classes=0, img_channels=1, attn=[16])
    fresh.save_pretrained(tmp_path / "fresh")
    fresh_card = ModelCard.load(tmp_path / "fresh" / "README.md")
    assert fresh_card.data.library_name == "sagan-torch" and "no training record" in fresh_card.text
    assert "[More Information Needed]" not in fresh_card.text
