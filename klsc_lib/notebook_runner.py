"""Execute every notebook headlessly with papermill and write ``CLAIMS.md``.

    python -m klsc_lib.notebook_runner --profile default --out figures
    python -m klsc_lib.notebook_runner --profile smoke --out build/smoke 01_gmm_constraints

The jupytext ``notebooks/NN_name.py`` file is the source of truth: it is read
(not the paired ``.ipynb``), so an edit to the ``.py`` is always what runs. The
executed copy, outputs included, lands in ``OUT/NN_name/NN_name.ipynb`` beside that
notebook's PNGs and ``metrics.json``, so a reader sees the results on GitHub; it
must stay under :data:`MAX_EXECUTED_BYTES` (a larger one is an error that names
the size). The command line shows a per-cell progress bar for each notebook.

A notebook runs into a temporary folder that replaces ``OUT/NN_name`` only when
it finished: a failed run leaves the previous results untouched (no mix of old and
new files) and keeps its executed copy, traceback included, as
``OUT/NN_name.failed.ipynb``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
MAX_EXECUTED_BYTES = 5 * 2**20  # an executed notebook committed under figures/ stays readable on GitHub


class ExecutedNotebookTooLarge(RuntimeError):
    """The executed notebook is over :data:`MAX_EXECUTED_BYTES`."""


def notebook_names() -> list[str]:
    """``NN_name`` of every notebook, in order."""
    return sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))


def run_notebook(name: str, profile: str, out_root: str | Path, seed: int = 0, device: str = "auto",
                 log_output: bool = False, progress_bar: bool = False, notebook_dir: Path = NOTEBOOK_DIR,
                 max_bytes: int = MAX_EXECUTED_BYTES) -> Path:
    """Execute one notebook with papermill; return the folder it wrote.

    ``progress_bar`` shows papermill's per-cell bar, ``log_output`` streams the cells'
    output to the log. Raises :class:`ExecutedNotebookTooLarge` (keeping the previous
    results) when the executed copy exceeds ``max_bytes``."""
    import jupytext
    import papermill

    src = Path(notebook_dir) / f"{name}.py"
    if not src.exists():
        raise FileNotFoundError(f"no notebook {src}; available: {notebook_names()}")
    out_root = Path(out_root).resolve()
    out_root.mkdir(parents=True, exist_ok=True)
    out_dir = out_root / name
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_root))
    failed = out_root / f"{name}.failed.ipynb"
    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    try:
        papermill.execute_notebook(
            nb,
            str(tmp_dir / f"{name}.ipynb"),
            # out_dir is where the notebook's files will live once the run succeeded
            parameters={"profile": profile, "seed": seed, "device": device, "out_dir": str(tmp_dir)},
            kernel_name="python3",  # the interpreter running this module (the project's environment)
            cwd=str(Path(notebook_dir)),
            progress_bar=progress_bar and {"desc": f"{name} cells", "leave": False},
            log_output=log_output,
        )
        size = (tmp_dir / f"{name}.ipynb").stat().st_size
        if size > max_bytes:
            raise ExecutedNotebookTooLarge(
                f"executed {name}.ipynb is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.1f} MiB limit: show "
                "fewer or smaller figures (plt.show of a saved PNG embeds it) or print less")
    except BaseException:
        if (tmp_dir / f"{name}.ipynb").exists():
            shutil.move(tmp_dir / f"{name}.ipynb", failed)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    failed.unlink(missing_ok=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp_dir.rename(out_dir)
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
    parser.add_argument("--log-output", action="store_true", help="stream every cell's output to the log")
    args = parser.parse_args(argv)

    names = args.notebooks or notebook_names()
    unknown = sorted(set(names) - set(notebook_names()))
    if unknown:
        parser.error(f"unknown notebooks {unknown}; available: {notebook_names()}")
    for name in (bar := tqdm(names, desc=f"notebooks ({args.profile})", unit="nb")):
        bar.set_postfix_str(name)
        run_notebook(name, args.profile, args.out, seed=args.seed, device=args.device, log_output=args.log_output,
                     progress_bar=True)
    print(f"wrote {write_claims_table(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
