"""The README's Python API examples run as written (one shared namespace, in order, like a session)."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_python_api_examples_run(capsys, tiny_run, tmp_path, monkeypatch):
    from sagan.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(tiny_run), "--out", "my-model"]) == 0  # as the README's third example says
    capsys.readouterr()
    blocks = python_api_blocks()
    assert len(blocks) == 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert tuple(namespace["features"].shape) == (2, 64, 16, 16)
    assert tuple(namespace["scores"].shape) == (4,)
    assert tuple(namespace["images"].shape) == (8, 3, 32, 32)  # tiny_run: RGB 32x32, classes class_0, class_1
    assert float(namespace["images"].abs().max()) <= 1.0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "class_1"
