"""What ``pip install sagan-torch`` (the core, no extra) must do, run by scripts/check_install.sh in a
virtual environment that has only the core: load the shipped model from Python and sample it, sample
it with ``sagan sample``, and answer a command that needs an extra with one line naming the extra."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

from sagan import Generator, generate

G = Generator.from_pretrained("fmnist32")
images, labels = generate(G, 4, seed=0, progress=False)
assert tuple(images.shape) == (4, 1, 32, 32) and images.isfinite().all(), images.shape
print(f"from_pretrained('fmnist32') and generate: {tuple(images.shape)}, classes {labels.tolist()}")

with tempfile.TemporaryDirectory() as out:
    subprocess.run(["sagan", "sample", "--pretrained", "fmnist32", "-n", "4", "--format", "grid,png", "--out", out,
                    "--no-progress"], check=True)
    pngs = sorted(p.name for p in Path(out).rglob("*.png"))
    assert len(pngs) == 5, pngs  # the grid and 4 images
    print(f"sagan sample: {len(pngs)} PNGs")

    extras = [m for m in ("matplotlib", "torch_fidelity", "tensorboard", "onnx") if importlib.util.find_spec(m)]
    assert not extras, f"not a core-only environment: {extras} installed"
    r = subprocess.run(["sagan", "attention", "--pretrained", "fmnist32", "--out", out], capture_output=True, text=True,
                       check=False)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and 'pip install "sagan-torch[figures]"' in lines[0], (r.returncode, r.stderr)
    print(f"a missing extra: {lines[0]}")

try:
    import sagan.metrics.evaluation  # noqa: F401
except ImportError as e:
    assert 'pip install "sagan-torch[eval]"' in str(e), e
    print(f"import sagan.metrics.evaluation: {type(e).__name__}: {e}")
else:
    sys.exit("sagan.metrics.evaluation imported without torch-fidelity")
