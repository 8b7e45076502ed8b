"""Every YAML file shipped in configs/ loads and validates."""
from pathlib import Path

import pytest

from sagan.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_loads(path):
    cfg = load_config(file=path)
    assert cfg.model.resolution in (32, 64, 128, 256)


def test_configs_exist():
    assert len(CONFIGS) >= 3
