"""``make bench``: run every ``benchmarks/bench_*.py`` and print their ratios.

Each benchmark module has ``run() -> dict`` returning ``{"name", "ratio", "detail"}``
measured within one process, so the ratio compares like with like; results are
also written to ``build/benchmarks.json``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from klsc_lib.report import to_jsonable
from klsc_lib.runtime import atomic_write_text

HERE = Path(__file__).resolve().parent


def main() -> None:
    results = []
    for path in sorted(HERE.glob("bench_*.py")):
        module = importlib.import_module(f"benchmarks.{path.stem}")
        result = module.run()
        results.append(result)
        print(f"{result['name']:<60} ratio {result['ratio']:>10.2f}   {result.get('detail', '')}")
    out = HERE.parent / "build" / "benchmarks.json"
    atomic_write_text(out, json.dumps(to_jsonable(results), indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
