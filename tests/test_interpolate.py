"""`sagan interpolate` and sagan.viz.interpolation: slerp against the angle formula, endpoint frames
equal to the endpoint samples, and the command as a user calls it (files, frame counts, bad input)."""
from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN_ARGS
from PIL import Image

from sagan.cli import main
from sagan.data.datasets import to_uint8
from sagan.sampling import load_run, seed_latents
from sagan.viz import interpolation as interp
from sagan.viz.interpolation import (
    animation_pixels,
    animation_sequence,
    class_interpolation,
    class_path,
    default_scale,
    fractions,
    lerp,
    render,
    seed_interpolation,
    slerp,
)

# --------------------------------------------------------------------------- slerp

def slerp_reference(a: list[float], b: list[float], t: float) -> list[float]:
    """Shoemake's formula, element by element in Python floats."""
    dot = sum(x * y for x, y in zip(a, b))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    omega = math.acos(max(-1.0, min(1.0, dot / (na * nb))))
    return [(math.sin((1 - t) * omega) * x + math.sin(t * omega) * y) / math.sin(omega) for x, y in zip(a, b)]


def test_slerp_matches_the_angle_formula():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, generator=gen, dtype=torch.float64), 3 * torch.randn(7, generator=gen, dtype=torch.float64)
    t = fractions(9)
    got = slerp(a, b, t)
    want = torch.tensor([slerp_reference(a.tolist(), b.tolist(), float(ti)) for ti in t], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_slerp_of_unit_vectors_turns_at_constant_speed_on_the_unit_sphere():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(16, generator=gen, dtype=torch.float64), torch.randn(16, generator=gen, dtype=torch.float64)
    a, b = a / a.norm(), b / b.norm()
    omega = math.acos(float(a @ b))
    e2 = b - (a @ b) * a
    e2 = e2 / e2.norm()  # the unit vector of the plane of a and b orthogonal to a
    t = fractions(11)
    got = slerp(a, b, t)
    for ti, p in zip(t.tolist(), got):
        torch.testing.assert_close(p, math.cos(ti * omega) * a + math.sin(ti * omega) * e2, rtol=0, atol=1e-12)
        assert abs(float(p.norm()) - 1) < 1e-12
        assert abs(math.acos(min(1.0, float(p @ a))) - ti * omega) < 1e-6


def test_slerp_and_lerp_hit_their_endpoints_exactly():
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(128, generator=gen), torch.randn(128, generator=gen)
    for f in (slerp, lerp):
        path = f(a, b, fractions(5))
        assert path.dtype == torch.float32 and path.shape == (5, 128)
        assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    assert fractions(2).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError):
        fractions(1)


@pytest.mark.parametrize("b_of", [lambda a: 2.5 * a, lambda a: -a, lambda a: torch.zeros_like(a)],
                         ids=["parallel", "antiparallel", "zero"])
def test_slerp_falls_back_to_lerp_where_the_arc_is_undefined(b_of):
    a = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    b = b_of(a)
    t = fractions(7)
    got = slerp(a, b, t)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, torch.stack([(1 - ti) * a + ti * b for ti in t]), rtol=0, atol=1e-15)


def test_class_path_goes_linearly_from_one_hot_to_one_hot():
    w = class_path([2, 0, 1], num_classes=3, steps=5)
    assert w.shape == (2, 5, 3) and w.dtype == torch.float32
    eye = torch.eye(3)
    assert torch.equal(w[0, 0], eye[2]) and torch.equal(w[0, -1], eye[0])
    assert torch.equal(w[1, 0], eye[0]) and torch.equal(w[1, -1], eye[1])
    torch.testing.assert_close(w[0, :, 0], torch.tensor([0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 5))


def test_seed_interpolation_uses_the_seeds_latents_and_truncation():
    plan = seed_interpolation([4, 9, 2], z_dim=32, cls=1, steps=6, truncation=0.7)
    z = seed_latents([4, 9, 2], 32, truncation=0.7)
    assert plan.z.shape == (2, 6, 32) and plan.y.shape == (2, 6) and (plan.y == 1).all()
    assert torch.equal(plan.z[0, 0], z[0]) and torch.equal(plan.z[0, -1], z[1])
    assert torch.equal(plan.z[1, 0], z[1]) and torch.equal(plan.z[1, -1], z[2])
    assert plan.stem == "seeds_4-9-2_class1_psi0.7"
    unconditional = seed_interpolation([0, 1], 8, None, 3)
    assert unconditional.stem == "seeds_0-1" and unconditional.y is None
    cplan = class_interpolation([0, 7], num_classes=10, seed=3, z_dim=8, steps=4)
    assert cplan.stem == "classes_0-7_seed3" and cplan.y.shape == (1, 4, 10)
    assert (cplan.z == seed_latents([3], 8)).all()


def test_animation_sequence_shares_endpoints_and_boomerangs():
    images = torch.arange(2 * 3, dtype=torch.float32).view(2, 3, 1, 1, 1)  # frame value = row * 3 + column
    images[1, 0] = images[0, -1]  # a walk: the second segment starts where the first ends
    seq = animation_sequence(images)
    assert seq.flatten().tolist() == [0, 1, 2, 4, 5]
    assert animation_sequence(images, boomerang=True).flatten().tolist() == [0, 1, 2, 4, 5, 4, 2, 1]
    assert animation_sequence(images[:1, :2], boomerang=True).flatten().tolist() == [0, 1]


def test_animation_pixels_are_nearest_neighbour_blocks():
    images = torch.rand(2, 3, 4, 4) * 2 - 1
    px = animation_pixels(images, scale=3)
    assert px.shape == (2, 12, 12, 3) and px.dtype == np.uint8
    assert np.array_equal(px[:, ::3, ::3], to_uint8(images).permute(0, 2, 3, 1).numpy())
    assert np.array_equal(px[:, 2::3, 1::3], px[:, ::3, ::3])
    assert animation_pixels(images[:, :1], scale=1).shape == (2, 4, 4)  # grayscale stays one channel
    assert default_scale(32) == 4 and default_scale(64) == 2 and default_scale(128) == 1 and default_scale(256) == 1
    assert default_scale(48) == 3


# --------------------------------------------------------------------------- endpoint frames are the samples

def test_endpoint_frames_equal_the_endpoint_samples(tiny_run):
    run = load_run(tiny_run)
    g = run.G
    with torch.no_grad():
        def sample(seed: int, cls: int) -> torch.Tensor:
            return g(seed_latents([seed], g.z_dim), torch.tensor([cls]))[0]

        plan = seed_interpolation([3, 7], g.z_dim, cls=1, steps=5)
        one_by_one = render(g, plan, batch_size=1)  # the same batch shape as the reference: bit for bit
        assert torch.equal(one_by_one[0, 0], sample(3, 1)) and torch.equal(one_by_one[0, -1], sample(7, 1))
        batched = render(g, plan, batch_size=64)
        torch.testing.assert_close(batched, one_by_one, rtol=0, atol=1e-5)
        assert not torch.equal(one_by_one[0, 0], one_by_one[0, 2])

        cplan = class_interpolation([1, 0], run.num_classes, seed=5, z_dim=g.z_dim, steps=4)
        morph = render(g, cplan, batch_size=1)  # one-hot class weights vs the class-index path
        assert torch.equal(morph[0, 0], sample(5, 1)) and torch.equal(morph[0, -1], sample(5, 0))


# --------------------------------------------------------------------------- the command

def gif_frames(path, mode=None) -> np.ndarray:
    return iio.imread(path, index=None, plugin="pillow", **({"mode": mode} if mode else {}))


def test_cli_seed_walk_writes_grid_gif_and_record(tiny_run, tmp_path, capsys):
    out = tmp_path / "interp"
    rc = main(["interpolate", str(tiny_run), "--seeds", "0,1,2", "--steps", "4", "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    stem = "seeds_0-1-2_class0"
    assert {p.name for p in out.iterdir()} >= {f"{stem}.png", f"{stem}.gif", f"{stem}.json"}
    assert "step 4" in printed and "EMA generator" in printed and str(out / f"{stem}.gif") in printed
    with Image.open(out / f"{stem}.png") as grid:  # 2 rows of 4 frames of 32 px, 2 px padding
        assert grid.size == (4 * 34 + 2, 2 * 34 + 2)
    frames = gif_frames(out / f"{stem}.gif")
    assert frames.shape == (1 + 2 * 3, 128, 128, 3)  # shared endpoints once; 32 px x default scale 4
    with Image.open(out / f"{stem}.gif") as gif:
        assert gif.info["loop"] == 0 and gif.info["duration"] == 80  # 12 fps in whole centiseconds
    record = json.loads((out / f"{stem}.json").read_text())
    assert record["model"]["step"] == 4 and record["model"]["generator"] == "ema"
    assert record["mode"] == "seeds" and record["seeds"] == [0, 1, 2] and record["class"] == 0
    assert record["class_name"] == "class_0" and record["steps"] == 4 and record["scale"] == 4
    assert record["animation"]["frames"] == 7 and record["grid"] == {"file": f"{stem}.png", "rows": 2, "columns": 4}

    run = load_run(tiny_run)  # the grid's row ends and the GIF's first and last frames are the endpoint samples
    with torch.no_grad():
        ends = to_uint8(run.G(seed_latents([0, 1, 2], run.G.z_dim), torch.zeros(3, dtype=torch.long)))
    ends = ends.permute(0, 2, 3, 1).numpy().astype(int)
    grid = np.asarray(Image.open(out / f"{stem}.png").convert("RGB")).astype(int)
    cell = lambda r, c: grid[2 + 34 * r:34 + 34 * r, 2 + 34 * c:34 + 34 * c]  # noqa: E731
    for (r, c), want in (((0, 0), ends[0]), ((0, 3), ends[1]), ((1, 0), ends[1]), ((1, 3), ends[2])):
        assert np.abs(cell(r, c) - want).max() <= 1  # the PNG is lossless (torchvision rounds like to_uint8)
    for frame, want, other in ((frames[0], ends[0], ends[2]), (frames[-1], ends[2], ends[0])):
        # An RGB GIF holds 256 colours a frame: the frame is the endpoint sample through that
        # quantisation, which the same writer applied to the sample alone reproduces.
        alone = gif_frames(interp.write_gif(tmp_path / "alone.gif", want.repeat(4, 0).repeat(4, 1)[None].astype(np.uint8),
                                            fps=12))[0]
        assert np.abs(frame.astype(int) - alone).mean() <= 1
        diff = np.abs(frame[::4, ::4].astype(int) - want).mean()
        assert diff < np.abs(frame[::4, ::4].astype(int) - other).mean() / 2

    if interp.mp4_supported():
        assert (out / f"{stem}.mp4").stat().st_size > 0 and record["animation"]["mp4"] == f"{stem}.mp4"
    else:
        assert 'pip install "sagan-torch[video]"' in printed and not (out / f"{stem}.mp4").exists()


def test_cli_class_morph_by_name_with_boomerang(tiny_run, tmp_path):
    out = tmp_path / "morph"
    rc = main(["interpolate", str(tiny_run), "--classes", "class_1,0", "--seed", "3", "--steps", "5", "--fps", "10",
               "--boomerang", "--scale", "2", "--truncation", "1.5", "--out", str(out), "--no-progress"])
    assert rc == 0
    stem = "classes_1-0_seed3_psi1.5"
    record = json.loads((out / f"{stem}.json").read_text())
    assert record["mode"] == "classes" and record["classes"] == [1, 0] and record["seed"] == 3
    assert record["class_names"] == ["class_1", "class_0"] and record["truncation"] == 1.5
    assert record["boomerang"] and record["animation"]["frames"] == 5 + 3 and record["model"]["step"] == 4
    frames = gif_frames(out / f"{stem}.gif")
    # Pillow stores identical consecutive frames once; a 4-step model's classes may differ little
    assert 2 <= len(frames) <= 8 and frames.shape[1:] == (64, 64, 3)
    with Image.open(out / f"{stem}.gif") as gif:
        assert gif.info["duration"] == 100


def test_cli_says_once_that_mp4_needs_imageio_ffmpeg(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(interp, "mp4_supported", lambda: False)
    assert main(["interpolate", str(tiny_run), "--steps", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.count('pip install "sagan-torch[video]"') == 1
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".gif", ".json", ".png"]


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "5"], "at least two seeds"),
    (["--seeds", "0,0"], "follows itself"),
    (["--seeds", "0,x"], "is not a seed (a whole number >= 0)"),
    (["--seeds", "0,1", "--classes", "0,1"], "not both"),
    (["--classes", "class_0"], "at least two classes"),
    (["--classes", "0,1", "--class", "0"], "--seed"),
    (["--seed", "3"], "--seeds A,B"),
    (["--class", "sneaker"], "no such class"),
    (["--classes", "0,5"], "no such class"),
    (["--steps", "1"], "at least 2 frames"),
    (["--fps", "0"], "--fps"),
    (["--fps", "120"], "at most 50"),
    (["--scale", "0"], "--scale"),
    (["--truncation", "-1"], "--truncation"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tiny_run, tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert main(["interpolate", str(tiny_run), *argv, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sagan interpolate: ") and "\n" not in err and message in err
    assert not out.exists()


def test_cli_out_must_not_be_a_file(tiny_run, tmp_path, capsys):
    f = tmp_path / "taken.png"
    f.write_bytes(b"x")
    assert main(["interpolate", str(tiny_run), "--out", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err and f.read_bytes() == b"x"


# --------------------------------------------------------------------------- unconditional, grayscale

@pytest.fixture(scope="module")
def gray_unconditional_run(tmp_path_factory, tiny_folder):
    out = tmp_path_factory.mktemp("runs_uncond")
    rc = main(["train", *TINY_TRAIN_ARGS, "--set", "model.conditional=false", "--set", "data.channels=1",
               "--data", str(tiny_folder), "--steps", "2", "--out", str(out), "--name", "gray"])
    assert rc == 0
    return out / "gray"


def test_cli_unconditional_grayscale_gif_frames_are_the_samples(gray_unconditional_run, tmp_path, capsys):
    run_dir = gray_unconditional_run
    assert main(["interpolate", str(run_dir), "--seeds", "4,8", "--steps", "3", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    frames = gif_frames(tmp_path / "seeds_4-8.gif", mode="L")
    assert frames.shape == (3, 128, 128)
    with Image.open(tmp_path / "seeds_4-8.gif") as gif:
        assert gif.mode in ("L", "P") and all(len(set(c)) == 1 for c in zip(*[iter(gif.getpalette()[:768])] * 3))
    run = load_run(run_dir)
    with torch.no_grad():
        ends = to_uint8(run.G(seed_latents([4, 8], run.G.z_dim), None))[:, 0].numpy()
    assert np.array_equal(frames[0, ::4, ::4], ends[0]) and np.array_equal(frames[-1, ::4, ::4], ends[1])
    assert json.loads((tmp_path / "seeds_4-8.json").read_text())["class"] is None

    for argv, message in ((["--classes", "0,1"], "unconditional"), (["--class", "0"], "unconditional")):
        assert main(["interpolate", str(run_dir), *argv, "--out", str(tmp_path / "no")]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err
