"""Attention figures: the maths from a query pixel to the heat map, on planted maps, and the
``sagan attention`` command."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sagan.cli import main
from sagan.nn.attention import SelfAttention2d
from sagan.sampling import load_run
from sagan.viz import attention as A

# --------------------------------------------------------------------------- index maths

def test_query_index_matches_explicit_reference():
    for res, feat in [(32, 16), (32, 8), (64, 32), (28, 7), (32, 32)]:
        for y in range(res):
            for x in range(res):
                cell = res // feat
                assert A.query_index(x, y, res, feat) == (y // cell) * feat + (x // cell), (res, feat, x, y)


def test_key_map_is_nearest_block_upsampling_with_peak_at_the_largest_entry():
    side, res = 8, 32
    row = torch.full((side * side,), 0.1)
    row[3 * side + 5] = 2.0  # key (kx=5, ky=3)
    heat = A.key_map(row, res)
    assert heat.shape == (res, res)
    peak_y, peak_x = np.unravel_index(int(heat.argmax()), heat.shape)
    assert (peak_x // 4, peak_y // 4) == (5, 3)
    assert torch.all(heat[12:16, 20:24] == 2.0)  # the whole 4x4 block of that key
    assert float(heat.sum()) == pytest.approx(float(row.sum()) * 16)  # each cell drawn as 16 pixels
    with pytest.raises(ValueError, match="not a square grid"):
        A.key_map(torch.ones(10), res)


def test_overlay_transparent_at_or_below_uniform_and_strongest_at_peak():
    img = np.full((4, 4), 0.5)
    heat = np.full((4, 4), 1 / 16)
    heat[1, 2] = 0.5
    out = A.overlay(img, heat, uniform=1 / 16)
    assert out.shape == (4, 4, 3)
    untouched = np.ones((4, 4), bool)
    untouched[1, 2] = False
    np.testing.assert_allclose(out[untouched], 0.5)  # at uniform weight the image shows as it is
    red = A.heat_colors()[255] / 255.0
    np.testing.assert_allclose(out[1, 2], 0.5 * (1 - A.HEAT_MAX_ALPHA) + red * A.HEAT_MAX_ALPHA, atol=1e-9)
    # a perfectly flat map draws nothing
    np.testing.assert_allclose(A.overlay(img, np.full((4, 4), 1 / 16), 1 / 16), np.full((4, 4, 3), 0.5))


# --------------------------------------------------------------------------- planted maps through the pipeline

def _rotation(fy: int, fx: int, side: int) -> tuple[int, int]:
    """The planted map: query cell (fy, fx) attends to key cell (fx, side-1-fy) (a rotation, so
    swapping x and y, or query and key, anywhere in the pipeline moves the peak)."""
    return fx, side - 1 - fy


def plant_rotation_map(layer: SelfAttention2d, monkeypatch) -> None:
    """Replace the layer's query/key projections so its map is (almost exactly) one-hot:
    row j has weight ~1 at key rotation(j). Values still come from the layer's own h conv."""
    def planted_qkv(x):
        b, _, h, w = x.shape
        n = h * w
        target = torch.tensor([ky * w + kx for fy in range(h) for fx in range(w)
                               for ky, kx in [_rotation(fy, fx, h)]])
        q = 50.0 * torch.nn.functional.one_hot(target, n).float().expand(b, n, n).contiguous()
        k = torch.eye(n).expand(b, n, n).contiguous()
        val = layer.h(x).flatten(2).transpose(1, 2).contiguous()
        return q, k, val
    monkeypatch.setattr(layer, "_qkv", planted_qkv)


def test_planted_generator_map_peaks_where_the_map_says(tiny_run, monkeypatch):
    run = load_run(tiny_run)
    layers = [m for m in run.G.modules() if isinstance(m, SelfAttention2d)]
    assert len(layers) == 1
    plant_rotation_map(layers[0], monkeypatch)
    images, y, maps = A.generator_samples(run.G, 2, None, seed=0)
    assert list(maps) == ["G.attn16"]
    a = maps["G.attn16"]
    res, side = images.shape[-1], 16
    assert a.shape == (2, side * side, side * side)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, side * side))
    points = [[(3, 5), (30, 2), (17, 28)], [(0, 31), (12, 12)]]
    panels = A.figure_panels(images, maps, points)
    assert len(panels) == 5
    cell = res // side
    for p in panels:
        x, y = p.point
        ky, kx = _rotation(y // cell, x // cell, side)
        peak_y, peak_x = np.unravel_index(int(p.heat.argmax()), p.heat.shape)
        assert (peak_x // cell, peak_y // cell) == (kx, ky), p.point
        block = (slice(ky * cell, (ky + 1) * cell), slice(kx * cell, (kx + 1) * cell))
        assert p.heat[block].min() > 0.99 and p.heat.sum() == pytest.approx(cell * cell, rel=1e-4)
        assert p.peak_over_uniform == pytest.approx(side * side, rel=1e-3)
        # the rendered overlay: strongest colour on the planted block, the image itself elsewhere
        disp = A.to_display(images[p.row])
        disp3 = disp if disp.ndim == 3 else np.repeat(disp[..., None], 3, 2)
        changed = np.abs(p.rgb - disp3).sum(-1)
        assert changed[block].min() > 0.1
        outside = np.ones(p.heat.shape, bool)
        outside[block] = False
        assert changed[outside].max() < 1e-6


def test_planted_discriminator_map_and_figure_file(tiny_run, monkeypatch, tmp_path):
    run = load_run(tiny_run)
    layer = next(m for m in run.D.modules() if isinstance(m, SelfAttention2d))
    plant_rotation_map(layer, monkeypatch)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    _, maps = A.discriminator_attention(run.D, images, torch.tensor([0, 1]))
    assert list(maps) == ["D.attn16"]
    row = maps["D.attn16"][1, A.query_index(4, 30, 32, 16)]  # cell (fx=2, fy=15) -> key (kx=0, ky=2)
    assert int(row.argmax()) == 2 * 16 + 0
    out = A.discriminator_attention_figure(run.D, images, torch.tensor([0, 1]), tmp_path / "d.png",
                                           class_names=["a", "b"], points=[(4, 30)])
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200


def test_biggan_variant_key_grid_is_half_the_query_grid():
    layer = SelfAttention2d(16, variant="biggan", spectral_norm=False)
    x = torch.randn(1, 16, 8, 8)
    _, attn = layer(x, return_attention=True)
    assert attn.shape == (1, 64, 16)
    heat = A.key_map(attn[0, A.query_index(5, 5, 32, 8)], 32)
    k = int(attn[0, A.query_index(5, 5, 32, 8)].argmax())
    peak_y, peak_x = np.unravel_index(int(heat.argmax()), heat.shape)
    assert (peak_x // 8, peak_y // 8) == (k % 4, k // 4)


# --------------------------------------------------------------------------- query points

def test_parse_points_and_errors():
    assert A.parse_points("3,4; 10,0", 32) == [(3, 4), (10, 0)]
    with pytest.raises(ValueError, match=r"\(32, 3\) is outside the 32x32 image; x and y must be in 0..31"):
        A.parse_points("1,1;32,3", 32)
    with pytest.raises(ValueError, match="is not 'x,y'"):
        A.parse_points("1;2", 32)
    with pytest.raises(ValueError, match="no query points"):
        A.parse_points(";", 32)


def test_auto_points_lie_on_the_object_and_are_spread():
    img = -torch.ones(1, 32, 32)
    img[:, 6:26, 10:22] = 1.0  # a bright 12x20 object on a dark background
    pts = A.auto_points(img, 3)
    assert len(set(pts)) == 3
    for x, y in pts:
        assert 10 <= x < 22 and 6 <= y < 26
    d = [abs(a[0] - b[0]) + abs(a[1] - b[1]) for i, a in enumerate(pts) for b in pts[i + 1:]]
    assert min(d) >= 4
    flat = A.auto_points(torch.zeros(3, 32, 32), 2)  # no object: still 2 points inside the image
    assert len(flat) == 2 and all(0 <= c < 32 for p in flat for c in p)


# --------------------------------------------------------------------------- the command

@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The tiny run's generator written by ``sagan export`` (read-only for tests: copy to modify)."""
    out = tmp_path_factory.mktemp("export") / "exp"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    return out


def test_attention_command_g_and_d(tiny_run, tmp_path, capsys):
    assert main(["attention", str(tiny_run), "--points", "8,8;20,24", "--class", "1", "-n", "2",
                 "--out", str(tmp_path / "figs")]) == 0
    out = capsys.readouterr().out
    png = tmp_path / "figs" / "attention_G_step4_seed0_class1.png"
    assert f"wrote {png} (G attention, generated images)" in out
    assert "(latest checkpoint, step 4, EMA generator, standing BN statistics)" in out  # which weights were drawn
    with Image.open(png) as im:
        assert im.format == "PNG"
    assert main(["attention", str(tiny_run), "--model", "d", "--class", "class_0", "--layer", "attn16",
                 "-n", "2", "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "attention_D_step4_seed0_class0.png").is_file()
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "attention_D_step4_seed0_class0.png", "attention_G_step4_seed0_class1.png"]


def test_attention_command_default_output_in_run_dir(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["attention", str(run), "-n", "1", "--num-points", "2", "--seed", "3"]) == 0
    assert (run / "attention" / "attention_G_step4_seed3.png").is_file()


def test_attention_command_on_an_exported_folder(exported, tmp_path, capsys):
    exp = tmp_path / "exp"
    shutil.copytree(exported, exp)
    assert main(["attention", str(exp), "--class", "class_1", "-n", "1", "--points", "4,4", "--device", "cpu"]) == 0
    png = exp / "attention" / "attention_G_step4_seed0_class1.png"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 100
    assert f"from exported model {exp} (step 4, EMA generator, standing BN statistics)" in capsys.readouterr().out


def test_attention_command_on_a_shipped_model_writes_to_the_working_directory(exported, tmp_path, monkeypatch,
                                                                               capsys):
    import sagan.models.export as export_mod
    import sagan.sampling as runs_mod
    shipped = tmp_path / "package_data"
    shutil.copytree(exported, shipped / "tinyshipped")
    monkeypatch.setattr(export_mod, "PRETRAINED_DIR", shipped)
    monkeypatch.setattr(runs_mod, "PRETRAINED_DIR", shipped)
    monkeypatch.chdir(tmp_path)
    assert main(["attention", "--pretrained", "tinyshipped", "-n", "1", "--num-points", "1"]) == 0
    assert (tmp_path / "pretrained-tinyshipped" / "attention" / "attention_G_step4_seed0.png").is_file()
    assert not (shipped / "tinyshipped" / "attention").exists()  # package data is never written to
    assert "from shipped model tinyshipped" in capsys.readouterr().out


def test_attention_command_model_d_on_an_export_is_a_usage_error(exported, capsys):
    assert main(["attention", str(exported), "--model", "d"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"sagan attention: error: --model d: the exported model {exported} holds only the generator (no "
                   "discriminator); give the run directory it was exported from, or a training checkpoint, to "
                   "draw D's attention")
    assert not (exported / "attention").exists()


@pytest.mark.parametrize("args, message", [
    (["--class", "7"], "--class 7: no such class; this model has classes 0..1 (0=class_0, 1=class_1)"),
    (["--class", "shoes"], "--class shoes: no such class"),
    (["--points", "40,3"], "--points: query point (40, 3) is outside the 32x32 image"),
    (["--points", "a,b"], "is not 'x,y'"),
    (["--layer", "G.attn8"], "--layer: attention layer 'G.attn8' not found; this model has G.attn16"),
    (["--model", "d", "--layer", "G.attn16"], "this model has D.attn16"),
    (["--out", "figs/fig.png"], "--out figs/fig.png: --out is a folder (the PNG's name is automatic); "
                                "give e.g. --out figs/fig"),
    (["--checkpoint", "best"], "--checkpoint best: "),
    (["--pretrained", "nosuchmodel"], "--pretrained nosuchmodel: no such shipped model"),
    (["--device", "nosuchdevice"], "--device nosuchdevice: "),
])
def test_attention_command_user_errors(tiny_run, capsys, args, message):
    assert main(["attention", *([] if "--pretrained" in args else [str(tiny_run)]), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_attention_command_checkpoint_best_without_best_pt(tiny_run, capsys):
    assert not (tiny_run / "checkpoints" / "best.pt").exists()
    assert main(["attention", str(tiny_run), "--checkpoint", "best"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sagan attention: error: --checkpoint best: {tiny_run} has no checkpoints/best.pt")
    assert "use --checkpoint latest" in err and "\n" not in err


def test_attention_command_model_without_attention(tiny_folder, tmp_path, capsys):
    from conftest import TINY_TRAIN_ARGS
    assert main(["train", *TINY_TRAIN_ARGS, "--data", str(tiny_folder), "--steps", "1", "--set", "model.g_attn=[]",
                 "--out", str(tmp_path), "--name", "noattn"]) == 0
    capsys.readouterr()
    assert main(["attention", str(tmp_path / "noattn")]) == 2
    err = capsys.readouterr().err
    assert "G of this model has no attention layers (model.g_attn=[]); nothing to draw; try --model d" in err
