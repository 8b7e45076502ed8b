"""The README's Python API examples run as written (one shared namespace, in order, like a session)."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_python_api_examples_run(capsys):
    blocks = python_api_blocks()
    assert len(blocks) == 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert tuple(namespace["features"].shape) == (2, 64, 16, 16)
    assert tuple(namespace["scores"].shape) == (4,)
    assert tuple(namespace["dresses"].shape) == (8, 1, 32, 32)
    assert float(namespace["dresses"].abs().max()) <= 1.0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "Dress"
