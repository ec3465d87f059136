"""Execute every notebook headlessly with papermill and write ``CLAIMS.md``.

    python -m klsc_lib.notebook_runner --profile default --out figures
    python -m klsc_lib.notebook_runner --profile smoke --out build/smoke 01_gmm_constraints

The jupytext ``notebooks/NN_name.py`` file is the source of truth: it is read
(not the paired ``.ipynb``), so an edit to the ``.py`` is always what runs. The
executed copy lands in ``OUT/NN_name/NN_name.ipynb`` beside that notebook's PNGs
and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def notebook_names() -> list[str]:
    """``NN_name`` of every notebook, in order."""
    return sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))


def run_notebook(name: str, profile: str, out_root: str | Path, seed: int = 0, device: str = "auto",
                 log_output: bool = False) -> Path:
    """Execute one notebook with papermill; return the folder it wrote."""
    import jupytext
    import papermill

    src = NOTEBOOK_DIR / f"{name}.py"
    if not src.exists():
        raise FileNotFoundError(f"no notebook {src}; available: {notebook_names()}")
    out_dir = Path(out_root).resolve() / name
    out_dir.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    papermill.execute_notebook(
        nb,
        str(out_dir / f"{name}.ipynb"),
        parameters={"profile": profile, "seed": seed, "device": device, "out_dir": str(out_dir)},
        kernel_name="python3",  # the interpreter running this module (the project's environment)
        cwd=str(NOTEBOOK_DIR),
        progress_bar=False,
        log_output=log_output,
    )
    return out_dir


def main(argv: list[str] | None = None) -> int:
    from tqdm.auto import tqdm

    from klsc_lib.profiles import PROFILE_NAMES
    from klsc_lib.report import write_claims_table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="NN_name of the notebooks to run (default: all)")
    parser.add_argument("--profile", default="default", choices=PROFILE_NAMES)
    parser.add_argument("--out", default="figures", help="output root (one folder per notebook)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    names = args.notebooks or notebook_names()
    unknown = sorted(set(names) - set(notebook_names()))
    if unknown:
        parser.error(f"unknown notebooks {unknown}; available: {notebook_names()}")
    for name in (bar := tqdm(names, desc=f"notebooks ({args.profile})", unit="nb")):
        bar.set_postfix_str(name)
        run_notebook(name, args.profile, args.out, seed=args.seed, device=args.device, log_output=True)
    print(f"wrote {write_claims_table(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
