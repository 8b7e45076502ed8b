"""Redraw the README's two pictures from the shipped fmnist32 model, as the training run drew them
at its end: the fixed sample grid (`samples/final.png`: the run's fixed noise, one row per class)
and the generator's attention maps (`attention/attention_G.png`). Usage:

    python scripts/make_readme_figures.py [--out docs/images]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sagan.config import config_from_dict
from sagan.data.grid import save_grid
from sagan.models import Generator
from sagan.models.export import export_info
from sagan.train.trainer import fixed_sample_inputs
from sagan.viz.attention import generator_attention_figure


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/images")
    args = ap.parse_args()
    out = Path(args.out)
    g = Generator.from_pretrained("fmnist32").eval()
    cfg = config_from_dict(export_info(g)["config"])
    z, y, cols = fixed_sample_inputs(cfg, g.num_classes, g.z_dim)
    with torch.no_grad():
        images = g(z, y)
    print(save_grid(images, out / "fmnist32_samples.png", cols))
    print(generator_attention_figure(g, out / "fmnist32_attention_G.png", class_names=g.class_names,
                                     seed=cfg.train.seed))


if __name__ == "__main__":
    main()
