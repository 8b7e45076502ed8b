"""The Python sampling API (issue 26): ``generate(G, n, classes=[names])`` as the CLI's --classes,
``seeds=`` with the CLI's seed-to-class rule, ``output="tensor"|"uint8"|"pil"`` and ``sagan.to_pil``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import sagan
from sagan import generate, to_pil
from sagan.data.datasets import FMNIST_CLASSES, to_uint8
from sagan.errors import UsageError
from sagan.models import Generator
from sagan.models.classes import resolve_classes


@pytest.fixture(scope="module")
def G() -> Generator:
    """An untrained 10-class grayscale 32 px generator with Fashion-MNIST's class names, its class
    embeddings (zero at init) made random so that every class draws differently."""
    torch.manual_seed(0)
    g = Generator(resolution=32, ch=8, z_dim=16, num_classes=10, img_channels=1, attn=[16],
                  class_names=list(FMNIST_CLASSES)).eval()
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, torch.nn.Embedding):
                m.weight.normal_(0, 0.5)
    return g


def test_classes_by_name_as_the_cli_takes_them(G):
    images, labels = generate(G, 4, classes=["Dress"])
    assert images.shape == (4, 1, 32, 32) and images.dtype == torch.float32 and labels.tolist() == [3] * 4
    same, _ = generate(G, 4, classes=[3])
    other, _ = generate(G, 4, classes=[4])
    assert torch.equal(images, same) and not torch.equal(images, other)
    # Case, punctuation and sample's folder names; a comma-separated string, "all", one name, numpy ints.
    for spec in (["dress", "ANKLE BOOT"], ["03_Dress", "ankle_boot"], "Dress,9", ["Dress", np.int64(9)],
                 ["dress", "09_Ankle_boot"], torch.tensor([3, 9])):
        assert generate(G, 4, classes=spec)[1].tolist() == [3, 9, 3, 9], spec
    assert generate(G, 2, classes="t-shirt_top")[1].tolist() == [0, 0]
    assert generate(G, 12, classes="all")[1].tolist() == [*range(10), 0, 1]
    assert resolve_classes(None, 10, list(FMNIST_CLASSES)) is None


@pytest.mark.parametrize("spec,words", [(["Boot"], ["Boot", "no such class", "9=Ankle boot"]),
                                        ([10], ["10", "0..9"]), ([], ["at least one class"]),
                                        (3.5, ["class names or indices"]), ([True], ["True", "no such class"])])
def test_a_class_the_model_lacks_is_one_clear_error(G, spec, words):
    with pytest.raises(UsageError) as e:
        generate(G, 2, classes=spec)
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value), str(e.value)


def test_classes_on_an_unconditional_model_are_refused():
    g = Generator(resolution=32, ch=8, z_dim=16, num_classes=0, img_channels=1, attn=[16]).eval()
    images, labels = generate(g, 2)
    assert images.shape == (2, 1, 32, 32) and labels is None
    with pytest.raises(UsageError, match="unconditional"):
        generate(g, 2, classes=["Dress"])


def test_seeds_follow_the_cli_rule_and_name_one_image(G):
    """Seed s has class classes[s % len(classes)] (all classes by default); its image is the same in any list."""
    wide, wide_labels = generate(G, seeds=range(40, 60))
    narrow, narrow_labels = generate(G, seeds=[42, 57])
    assert wide_labels.tolist() == [s % 10 for s in range(40, 60)] and narrow_labels.tolist() == [2, 7]
    assert torch.equal(narrow[0], wide[2]) and torch.equal(narrow[1], wide[17])
    _, labels = generate(G, seeds=[41, 42, 43], classes=["Dress", "Sneaker"])
    assert labels.tolist() == [7, 3, 7]
    one, labels = generate(G, seeds=[41, 42], classes="Sneaker")
    assert labels.tolist() == [7, 7]
    assert not torch.equal(one[1], narrow[0])  # another class, the same latent
    # seeds fix the count; shards of a seed list concatenate to the whole.
    parts = [generate(G, seeds=range(40, 45), shard=(r, 2)) for r in (0, 1)]
    assert torch.equal(torch.cat([p[0] for p in parts]), wide[:5])
    assert torch.cat([p[1] for p in parts]).tolist() == wide_labels[:5].tolist()


@pytest.mark.parametrize("kwargs,words", [({"n": 3, "seeds": [1, 2]}, ["n=3", "2 seeds"]), ({}, ["give n"]),
                                          ({"seeds": [-1]}, ["-1", "between 0"]), ({"seeds": [2.5]}, ["2.5"]),
                                          ({"n": 2, "output": "np"}, ["'np'", "'pil'"])])
def test_bad_arguments_are_one_clear_error(G, kwargs, words):
    with pytest.raises(UsageError) as e:
        generate(G, **kwargs)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_output_switch_and_to_pil(G):
    images, labels = generate(G, 3, seed=5)
    as_uint8, labels_u8 = generate(G, 3, seed=5, output="uint8")
    assert as_uint8.dtype == torch.uint8 and torch.equal(as_uint8, to_uint8(images))
    assert torch.equal(labels, labels_u8)
    pil, _ = generate(G, 3, seed=5, output="pil")
    assert isinstance(pil, list) and len(pil) == 3 and pil[0].mode == "L" and pil[0].size == (32, 32)
    np.testing.assert_array_equal(np.stack([np.asarray(p) for p in pil]), as_uint8[:, 0].numpy())
    # to_pil, exported at the top level: a batch -> a list, one image -> one image, uint8 or [-1, 1].
    assert sagan.to_pil is to_pil
    single = to_pil(images[1])
    np.testing.assert_array_equal(np.asarray(single), np.asarray(pil[1]))
    np.testing.assert_array_equal(np.asarray(to_pil(as_uint8)[2]), np.asarray(pil[2]))
    rgb = to_pil(torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1).expand(3, 2, 4))
    assert rgb.mode == "RGB" and rgb.size == (4, 2) and rgb.getpixel((0, 0)) == (0, 128, 255)
    with pytest.raises(UsageError, match="1 or 3 channels"):
        to_pil(torch.zeros(2, 4, 8, 8))

