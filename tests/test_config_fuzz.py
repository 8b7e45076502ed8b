"""Fuzzed configs and command lines: every bad input is a ConfigError / exit code 2, never a traceback."""
from __future__ import annotations

import dataclasses
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagan.cli import main
from sagan.config import Config, ConfigError, config_from_dict, load_config, parse_override, set_value, validate

pytestmark = pytest.mark.usefixtures("one_thread")


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _real_keys() -> list[str]:
    cfg = Config()
    keys = [f.name for f in dataclasses.fields(cfg) if not dataclasses.is_dataclass(getattr(cfg, f.name))]
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section):
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(section)]
    return keys


REAL_KEYS = _real_keys()
keys = st.one_of(st.sampled_from(REAL_KEYS), st.sampled_from(["model", "train", "optim"]),
                 st.text(min_size=0, max_size=20),
                 st.sampled_from(REAL_KEYS).map(lambda k: k + ".extra"), st.just("."), st.just("train..steps"))
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                    st.sampled_from(["hinge", "cpu", "cuda:٣", "cuda:99", "image_folder", "rollback", "stop",
                                     "bf16", "2020-13-01", "1e400", "-0", "\x00", "NaN", ".inf"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=8)


def _ok_or_config_error(fn, *args):
    try:
        return fn(*args)
    except ConfigError as e:
        assert str(e), "a ConfigError must say what is wrong"
        return None


@FUZZ
@given(text=st.text(max_size=60))
def test_parse_override_never_crashes(text):
    result = _ok_or_config_error(parse_override, text)
    if result is not None:
        key, _ = result
        assert key == key.strip() and key


@FUZZ
@given(key=keys, value=values)
def test_set_value_then_validate_never_crashes(key, value):
    cfg = Config()
    if _ok_or_config_error(set_value, cfg, key, value) is None:
        return
    _ok_or_config_error(validate, cfg)


@FUZZ
@given(pairs=st.lists(st.tuples(keys, st.one_of(values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
                                              st.text(max_size=20))), max_size=4))
def test_load_config_overrides_never_crash(pairs):
    _ok_or_config_error(load_config, None, None, [f"{k}={v}" for k, v in pairs])


@FUZZ
@given(data=st.one_of(values, st.dictionaries(st.sampled_from(["preset", "model", "data", "optim", "loss", "train",
                                                                 "name", "bogus"]), values, max_size=6)))
def test_config_from_dict_never_crashes(data):
    _ok_or_config_error(config_from_dict, data)


@FUZZ
@given(content=st.one_of(st.text(max_size=200), values.map(lambda v: yaml.safe_dump(v)),
                         st.binary(max_size=64)))
def test_config_file_never_crashes(tmp_path, content):
    path = tmp_path / "cfg.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    _ok_or_config_error(load_config, None, path, None)


def test_named_bad_values_are_explained():
    cases = {"train.steps=-5": "train.steps=-5 must be >= 1", "train.batch_size=0": "train.batch_size=0",
             "optim.lr_d=7": "optim.lr_d=7.0 must be in (0, 1)", "train.seed=2**40": "expected an integer",
             "train.seed=99999999999": "train.seed=99999999999 must be between 0 and",
             "train.device=cuda:٣": "choose auto, cpu, cuda, cuda:N or mps", "train.on_divergence=retry": "rollback",
             "train.rollback_lr_factor=0": "must be in (0, 1]", "model.resolution=48": "choose one of",
             "train.stepz=3": "unknown config key 'train.stepz'", "train.steps=2020-13-01": "expected an integer",
             "data.root=": "data.root='' must be a non-empty path", "train.n_dis=1000000": "between 1 and 100", "train.steps=1e12": "between 1 and 10**10"}
    for override, expected in cases.items():
        with pytest.raises(ConfigError) as info:
            load_config(None, None, [override])
        assert expected in str(info.value), (override, str(info.value))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=st.lists(st.one_of(st.sampled_from(["--set", "--steps", "--preset", "--config", "--name", "--resume",
                                                  "--data", "--out", "fmnist32", "-x", "--", "=", "train.steps=0"]),
                                 st.text(alphabet=string.printable + "üé数", max_size=15),
                                 st.tuples(keys, scalars).map(lambda kv: f"{kv[0]}={kv[1]}")), max_size=6))
def test_cli_train_fuzz_returns_usage_error(tmp_path, capsys, tokens):
    # The fixed arguments come last, so they win: no data, no download, an invalid step count.
    # Whatever the fuzzed part holds, nothing trains and nothing is written.
    argv = ["train", *tokens, "--data", str(tmp_path / "missing"), "--set", "data.download=false",
            "--out", str(tmp_path / "runs"), "--steps", "0"]
    rc = main(argv)
    captured = capsys.readouterr()
    if rc == 0:  # only --help gets here
        assert "usage:" in captured.out and any(t in ("-h", "--help") or t.startswith("--h") for t in tokens)
        return
    assert rc == 2, (argv, captured.err)
    assert "error" in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, expected", [
    (["train", "--steps", "ten"], "invalid int value"),
    (["train", "--preset", "nope"], "invalid choice"),
    (["train", "--set", "train.steps"], "must look like section.key=value"),
    (["train", "--set", "bogus.key=1"], "unknown config key 'bogus'"),
    (["train", "--config", "/nonexistent/x.yaml"], "does not exist"),
    (["train", "--resume", "/nonexistent/run"], "no such run directory"),
    (["train", "--name", "a/b", "--steps", "1"], "must be a plain directory name"),  # before the (missing) data
    (["frobnicate"], "invalid choice"),
    ([], None),
])
def test_cli_bad_arguments_exit_2(tmp_path, capsys, argv, expected):
    if argv[:1] == ["train"]:
        argv = [*argv, "--data", str(tmp_path / "missing"), "--set", "data.download=false", "--out", str(tmp_path)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if expected:
        assert expected in captured.err


def test_resume_with_damaged_config_uses_the_checkpoint_copy(tmp_path, tiny_run, capsys):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "config.yaml").write_bytes(b"\xff\xfe not: [yaml")
    assert main(["train", "--resume", str(run), "--steps", "5", "--no-progress"]) == 0
    assert "using the config stored in" in capsys.readouterr().err
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["steps"] == 5  # rewritten, whole
    Path(run / "config.yaml").unlink()
    shutil.rmtree(run / "checkpoints")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    assert "no readable checkpoint holds a config" in capsys.readouterr().err
