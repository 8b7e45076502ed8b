"""Append the training-step rows of extra ``sagan bench`` runs to a results file.

    python benchmarks/merge.py benchmarks/results.json other/results.json [more/results.json ...]

(each argument a results.json written by `sagan bench --out DIR`)

Used for variants of a preset measured in separate runs (e.g. ``--set train.channels_last=true``).
Each appended row keeps the fp32 matmul rate measured in its own run
(``matmul_gflops_same_run``), so its "% of matmul" compares numbers taken under the same load.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    target = Path(argv[0])
    res = json.loads(target.read_text(encoding="utf-8"))
    for extra_path in argv[1:]:
        extra = json.loads(Path(extra_path).read_text(encoding="utf-8"))
        for row in extra.get("train", []):
            row = dict(row, matmul_gflops_same_run=extra["matmul_fp32"]["gflops"],
                       measured=f"{extra.get('started')} (separate run)")
            res.setdefault("train", []).append(row)
    target.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(f"{target}: {len(res.get('train', []))} training-step rows")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
