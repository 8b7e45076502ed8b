"""The nearest-neighbour view of ``sagan report``: generated images next to their closest training images."""
from __future__ import annotations

import shutil

import pytest
import torch

from sagan.errors import UsageError
from sagan.metrics.neighbours import nearest_neighbours
from sagan.metrics.reference import reference_for
from sagan.sampling import load_run
from sagan.viz import neighbours as N


def _slow_neighbours(queries: torch.Tensor, bank: torch.Tensor, k: int):
    """Every distance by an explicit loop over the bank, in Python integers; sorted by (distance, index)."""
    out = []
    for q in queries:
        d = [(sum((int(a) - int(b)) ** 2 for a, b in zip(q.flatten().tolist(), x.flatten().tolist(), strict=False)), j)
             for j, x in enumerate(bank)]
        out.append(sorted(d)[:k])
    return out


def test_nearest_neighbours_match_a_slow_loop_and_find_exact_copies():
    gen = torch.Generator().manual_seed(0)
    bank = torch.randint(0, 256, (37, 1, 6, 6), generator=gen, dtype=torch.uint8)
    queries = torch.cat([bank[[5, 30]], torch.randint(0, 256, (3, 1, 6, 6), generator=gen, dtype=torch.uint8)])
    dist, idx = nearest_neighbours(queries, bank, k=4, chunk=8)  # several chunks
    for i, want in enumerate(_slow_neighbours(queries, bank, 4)):
        assert idx[i].tolist() == [j for _, j in want]
        assert dist[i].tolist() == pytest.approx([(d / 36) ** 0.5 for d, _ in want], rel=1e-12)
    assert idx[0, 0] == 5 and idx[1, 0] == 30 and dist[0, 0] == 0 and dist[1, 0] == 0  # copies: exactly 0


def test_nearest_neighbours_refuses_what_it_cannot_compare():
    a = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(UsageError, match="one size"):
        nearest_neighbours(a, torch.zeros(3, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(UsageError, match="uint8"):
        nearest_neighbours(a.float(), a)
    with pytest.raises(UsageError, match="k = 5"):
        nearest_neighbours(a, a, k=5)


def test_report_view_finds_a_copied_training_image_at_distance_0(tiny_run, monkeypatch):
    """A 'generator' that returns training images: each is its own nearest neighbour, at distance 0."""
    run = load_run(tiny_run)
    real, labels = reference_for(run.cfg.data, run.cfg.model.resolution, run.channels, "train",
                                 progress=False).load()
    picks = torch.tensor([3, 12])

    def copying_generate(g, n, classes, seed, batch_size=256, device="cpu", **kw):
        from sagan.data.datasets import to_model_range
        return to_model_range(real[picks[:n]]), labels[picks[:n]]
    monkeypatch.setattr(N, "generate", copying_generate)
    rows, note = N.neighbours_section(run, 0, "cpu", n=2, k=3)
    assert [r.distances[0] for r in rows] == [0.0, 0.0]
    assert all(r.distances == sorted(r.distances) and r.distances[1] > 0 for r in rows)
    assert [r.title for r in rows] == [run.class_names[int(labels[j])] for j in picks]
    assert [r.neighbour_titles[0] for r in rows] == [r.title for r in rows]
    assert "2 of 2 generated images are within 1 of a training image: copies" in note
    assert "all 16 training images" in note and "pixel space" in note


def test_report_has_the_view_and_says_why_when_the_data_is_gone(tiny_run, tmp_path):
    from sagan.viz.report import build_report
    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    html = build_report(run_dir, tmp_path / "a", explorer_images=1).read_text()
    assert '<section id="neighbours">' in html and "Searched all 16 training images" in html
    assert html.count('alt="generated class_') == N.DEFAULT_QUERIES
    run = load_run(run_dir)
    rows, note = N.neighbours_section(run, 0, "cpu", data_root=str(tmp_path / "moved"))
    assert rows == [] and note.startswith("Not drawn: the training images cannot be loaded") and "--data" in note
