"""Render the JSON written by ``sagan bench`` as docs/benchmarks.md (the renderer is ``sagan.bench.render``).

    python benchmarks/render.py benchmarks/results.json docs/benchmarks.md
"""
import sys

from sagan.bench.render import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
