"""The light core and its extras: pyproject.toml and sagan.extras agree, a missing optional package is
one line naming the ``pip install`` to run, and with only the core importable the shipped model loads,
samples and ``sagan sample`` works. The same is checked in a real fresh virtual environment by
scripts/check_install.sh (run by .ci/run at the declared floors, and here with ``-m slow``)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sagan.extras import EXTRAS, MissingExtraError, check_extras, install_hint, requires

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)).lower()


def test_the_extras_in_pyproject_provide_the_modules_sagan_extras_names():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {extra: {_name(r) for r in reqs} for extra, reqs in project["optional-dependencies"].items()}
    for extra, modules in EXTRAS.items():
        assert {_name(d) for d in modules.values()} <= declared[extra], extra
    assert project["optional-dependencies"]["all"] == [f"sagan-torch[{','.join(EXTRAS)}]"]
    dev_extras = next(r for r in project["optional-dependencies"]["dev"] if r.startswith("sagan-torch["))
    assert set(dev_extras[len("sagan-torch["):-1].split(",")) == set(EXTRAS)  # the tests use every extra (MP4s: video)
    core = {_name(r) for r in project["dependencies"]}
    optional = {_name(d) for modules in EXTRAS.values() for d in modules.values()}
    assert not core & optional
    floors = dict(re.match(r"([A-Za-z0-9_.-]+)>=(\S+)", r).groups() for r in project["dependencies"])
    assert floors["huggingface_hub"] == "0.30"  # ModelCardData(paper_url=...) exists from 0.30


def test_a_missing_package_is_one_line_naming_its_extra():
    with pytest.raises(MissingExtraError) as e, requires("figures", "the report"):
        raise ModuleNotFoundError("No module named 'matplotlib.pyplot'", name="matplotlib.pyplot")
    assert str(e.value) == ('matplotlib is not installed (it comes with the figures extra); the report needs it: '
                            'pip install "sagan-torch[figures]"')
    assert isinstance(e.value, ImportError) and e.value.exit_code == 2
    with pytest.raises(ModuleNotFoundError) as other, requires("figures"):  # not the extra's: a real bug, unchanged
        import sagan_no_such_module  # noqa: F401
    assert not isinstance(other.value, MissingExtraError)
    with pytest.raises(KeyError), requires("no-such-extra"):
        pass
    assert install_hint("video") == 'pip install "sagan-torch[video]"'
    check_extras(*EXTRAS.keys() - {"video"})  # what .[dev] installs is all there


CORE_ONLY = """
import json, subprocess, sys, tempfile
from pathlib import Path
BLOCKED = {blocked}
for name in BLOCKED:  # as if not installed: import raises ModuleNotFoundError, find_spec returns None
    sys.modules[name] = None
from sagan import Generator, generate
from sagan.cli import main
G = Generator.from_pretrained("fmnist32")
images, labels = generate(G, 3, seed=0, progress=False)
out = Path(tempfile.mkdtemp())
report = {{"shape": list(images.shape), "sample": main(["sample", "--pretrained", "fmnist32", "-n", "3",
                                                      "--format", "grid,png", "--out", str(out), "--no-progress"]),
          "pngs": len(list(out.rglob("*.png")))}}
for command in (["attention", "--pretrained", "fmnist32"], ["report", "--pretrained", "fmnist32"],
                ["interpolate", "--pretrained", "fmnist32"], ["evaluate", "--pretrained", "fmnist32"],
                ["train", "--steps", "1"]):
    report[command[0]] = main(command)
try:
    import sagan.metrics.evaluation
except ImportError as e:
    report["import"] = f"{{type(e).__name__}}: {{e}}"
report["loaded"] = sorted(m for m in BLOCKED if sys.modules.get(m) is not None)
print(json.dumps(report))
"""


def test_with_only_the_core_a_model_loads_samples_and_an_extra_is_asked_for(tmp_path):
    blocked = sorted({m for modules in EXTRAS.values() for m in modules})
    r = subprocess.run([sys.executable, "-c", CORE_ONLY.format(blocked=blocked)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["shape"] == [3, 1, 32, 32] and report["sample"] == 0 and report["pngs"] == 4  # grid + 3
    assert report["attention"] == report["report"] == report["interpolate"] == report["evaluate"] == 2
    assert report["train"] == 2
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("sagan ")]
    assert errors == [f'sagan {c}: error: matplotlib is not installed (it comes with the figures extra); {what} needs '
                      'it: pip install "sagan-torch[figures]"'
                      for c, what in (("attention", "sagan attention"), ("report", "sagan report"),
                                      ("interpolate", "the GIF of sagan interpolate"))] + [
        'sagan evaluate: error: torch-fidelity is not installed (it comes with the eval extra): '
        'pip install "sagan-torch[eval]"',
        'sagan train: error: tensorboard is not installed (it comes with the train extra); sagan train needs it: '
        'pip install "sagan-torch[train]"']
    assert report["import"] == ('MissingExtraError: torch-fidelity is not installed (it comes with the eval extra): '
                                'pip install "sagan-torch[eval]"')
    assert report["loaded"] == []


@pytest.mark.slow
def test_a_fresh_virtual_environment_with_the_core_at_its_floors(tmp_path):
    """scripts/check_install.sh --floors: minutes (it installs torch into a new environment)."""
    r = subprocess.run(["bash", str(ROOT / "scripts" / "check_install.sh"), "--floors"], capture_output=True,
                       text=True, timeout=1800, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "check_install: the core at its floors works" in r.stdout
