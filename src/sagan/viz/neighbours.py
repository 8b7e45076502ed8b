"""The report's nearest-neighbour view: generated images next to their closest training images.

For a few generated images (spread over the classes of a conditional model), the ``k`` training
images nearest in pixel space (:func:`sagan.metrics.neighbours.nearest_neighbours`, over the whole
training split, every class), with the distances: a sample at distance about 0 from a training
image is a copy of it.
"""
from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass

import torch

from sagan.data.datasets import to_model_range, to_uint8
from sagan.data.grid import grid_png
from sagan.errors import DataError
from sagan.metrics.neighbours import nearest_neighbours
from sagan.metrics.reference import reference_for
from sagan.sampling import LoadedRun, generate

DEFAULT_QUERIES = 8
DEFAULT_K = 5
COPY_DISTANCE = 1.0  # RMS grey levels below which a neighbour is called a copy in the note


@dataclass
class NeighbourRow:
    """One generated image and its nearest training images, as one strip of ``k + 1`` images."""
    title: str  # the generated image's class (or "sample N")
    uri: str  # data URI of the strip: the generated image, then its neighbours, nearest first
    distances: list[float]  # RMS difference per pixel value, grey levels (0-255)
    neighbour_titles: list[str]  # each neighbour's class (or its index in the training split)


def neighbour_rows(fake: torch.Tensor, titles: list[str], real: torch.Tensor, real_titles: list[str],
                   k: int = DEFAULT_K) -> list[NeighbourRow]:
    """The rows of the view for uint8 generated images ``fake`` against uint8 training images ``real``."""
    distances, indices = nearest_neighbours(fake, real, k)
    rows = []
    for i in range(len(fake)):
        strip = torch.cat([fake[i:i + 1], real[indices[i]]])
        png = base64.b64encode(grid_png(to_model_range(strip), k + 1)).decode("ascii")
        rows.append(NeighbourRow(titles[i], f"data:image/png;base64,{png}",
                                 [round(float(d), 2) for d in distances[i]],
                                 [real_titles[int(j)] for j in indices[i]]))
    return rows


def neighbours_section(run: LoadedRun, seed: int, device: str | torch.device, data_root: str | None = None,
                       n: int = DEFAULT_QUERIES, k: int = DEFAULT_K) -> tuple[list[NeighbourRow], str]:
    """The rows of the view for ``n`` images of ``run``'s generator (``seed``) against its training split,
    and a note (what was searched; why nothing was drawn when the training data cannot be loaded)."""
    cfg = run.cfg
    data_cfg = dataclasses.replace(cfg.data, root=data_root) if data_root is not None else cfg.data
    try:
        reference = reference_for(data_cfg, cfg.model.resolution, run.channels, "train", progress=False)
        real, labels = reference.load()
    except DataError as e:
        return [], f"Not drawn: the training images cannot be loaded: {e} (sagan report --data PATH if they moved)."
    k = min(k, len(real))
    with torch.no_grad():
        images, y = generate(run.G, n, None, seed, batch_size=256, device=device)
    names = run.class_names

    def name(c: int) -> str:
        return names[c] if c < len(names) else f"class {c}"
    titles = [name(int(c)) for c in y] if y is not None else [f"sample {i + 1}" for i in range(n)]
    real_titles = ([name(int(c)) for c in labels] if labels is not None and run.num_classes
                   else [f"#{j}" for j in range(len(real))])
    rows = neighbour_rows(to_uint8(images), titles, real, real_titles, k)
    copies = sum(r.distances[0] < COPY_DISTANCE for r in rows)
    note = (f"Searched all {len(real)} training images ({reference.description}) in pixel space; distance = "
            "root-mean-square difference per pixel value in grey levels (0-255); 0 is an exact copy. "
            + (f"{copies} of {len(rows)} generated images are within {COPY_DISTANCE:g} of a training image: "
               "copies." if copies else f"No generated image is within {COPY_DISTANCE:g} of a training image."))
    return rows, note
