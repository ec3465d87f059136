"""Per-notebook results: figures, ``metrics.json`` and the claims ledger.

Every notebook makes one :class:`Report`, records metrics (ours beside the paper's
value where the paper gives one) and claims, saves its figures through it and ends
with :meth:`Report.write`. :func:`write_claims_table` then gathers every notebook's
claims into ``figures/CLAIMS.md``.

A claim is ``{"id", "paper_ref", "statement", "ours", "paper", "holds", "kind",
"threshold"}``. A claim that does not hold is written as such: the ledger never drops
or retunes it.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from klsc_lib.runtime import atomic_path, atomic_write_text

_VERSIONED = ("torch", "torchvision", "numpy", "scipy", "matplotlib", "timm", "diffusers", "klsc_lib")


#: What a claim tests: ``paper`` an empirical statement of the paper on our data;
#: ``identity`` a theorem that holds for any input (a check of the code, with a tolerance
#: that fits the precision reached); ``ours`` a quality target of this reproduction (the
#: simulated rater study's claims are ``ours``, "simulated" in their text: they test the
#: analysis, not the paper).
CLAIM_KINDS = ("paper", "identity", "ours")


@dataclass(frozen=True)
class Claim:
    id: str
    paper_ref: str
    statement: str
    ours: Any
    paper: Any
    holds: bool
    kind: str  # one of CLAIM_KINDS
    threshold: Any = None  # our pass criterion where it is not the paper's value itself


def to_jsonable(value: Any) -> Any:
    """Convert numpy / torch scalars and arrays, tuples and non-finite floats to JSON."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "-inf", "nan": JSON has no literal for them
    if isinstance(value, Mapping):  # dicts and read-only views (paper_values)
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def host() -> dict[str, Any]:
    """The CPU, the instruction set torch's CPU kernels dispatch to and the torch threads:
    at the same versions, seed and threads, another host may round differently (a
    transcoder trained on the default world then learns other features), so a result
    names where it ran."""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return {"cpu": cpu, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads()}


class Report:
    """Collects one notebook's outputs under ``out_dir`` (``figures/NN_name``)."""

    def __init__(self, notebook: str, out_dir: str | Path, profile: str, seed: int, device: str = "cpu"):
        self.notebook = notebook
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.profile = profile
        self.seed = seed
        self.device = str(device)
        self.metrics: dict[str, Any] = {}
        self.claims: list[Claim] = []
        self.figures: list[str] = []
        self._start = time.perf_counter()

    def metric(self, name: str, ours: Any, paper: Any = None, note: str | None = None) -> None:
        """Record a number (or table); ``paper`` is the paper's value where it gives one."""
        entry: dict[str, Any] = {"ours": ours}
        if paper is not None:
            entry["paper"] = paper
        if note:
            entry["note"] = note
        self.metrics[name] = entry

    def claim(self, id: str, paper_ref: str, statement: str, ours: Any, paper: Any, holds: bool, *, kind: str,
              threshold: Any = None) -> Claim:
        """Record one ledger claim; ``kind`` is one of :data:`CLAIM_KINDS`."""
        if kind not in CLAIM_KINDS:
            raise ValueError(f"claim {id!r}: kind must be one of {CLAIM_KINDS}, got {kind!r}")
        if any(c.id == id for c in self.claims):
            raise ValueError(f"claim id {id!r} recorded twice in {self.notebook}")
        c = Claim(id, paper_ref, statement, to_jsonable(ours), to_jsonable(paper), bool(holds), kind,
                  to_jsonable(threshold))
        self.claims.append(c)
        return c

    def savefig(self, fig, name: str, dpi: int = 120) -> Path:
        """Save a matplotlib figure as ``out_dir/name.png`` (atomically)."""
        path = self.out_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
        self.figures.append(path.name)
        return path

    def as_dict(self) -> dict[str, Any]:
        return to_jsonable({
            "notebook": self.notebook,
            "profile": self.profile,
            "seed": self.seed,
            "device": self.device,
            "versions": package_versions(),
            "host": host(),
            "wall_time_s": round(time.perf_counter() - self._start, 2),
            "figures": self.figures,
            "metrics": self.metrics,
            "claims": [asdict(c) for c in self.claims],
        })

    def write(self) -> Path:
        path = self.out_dir / "metrics.json"
        atomic_write_text(path, json.dumps(self.as_dict(), indent=2) + "\n")
        return path


_KIND_TITLES = {
    "paper": "Statements of the paper, tested on our data",
    "identity": "Identities (theorems that hold for any input: checks of the code, tolerance = precision reached)",
    "ours": "Quality targets of this reproduction",
}
_MAX_ITEMS = 4  # list / dict entries shown per cell
_MAX_CELL = 120  # characters per cell


def _fmt(value: Any) -> str:
    """A short cell: 4 significant digits, at most a few entries of a list or dict."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        more = ", …" if len(value) > _MAX_ITEMS else ""
        return "[" + ", ".join(_fmt(v) for v in value[:_MAX_ITEMS]) + more + "]"
    if isinstance(value, dict):
        items = list(value.items())
        more = ", …" if len(items) > _MAX_ITEMS else ""
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in items[:_MAX_ITEMS]) + more + "}"
    return str(value)


def _cell(value: Any) -> str:
    text = (value if isinstance(value, str) else _fmt(value)).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= _MAX_CELL else text[:_MAX_CELL - 1] + "…"


def write_claims_table(figures_root: str | Path) -> Path:
    """Gather the claims of every ``figures_root/*/metrics.json`` into ``CLAIMS.md``:
    one section per kind (paper, identity, ours), claims that hold first, then by
    notebook; the paper's value and our threshold in separate columns."""
    root = Path(figures_root)
    by_kind: dict[str, list[tuple[bool, str, dict[str, Any]]]] = {k: [] for k in CLAIM_KINDS}
    seen: dict[str, Path] = {}
    for metrics_path in sorted(root.glob("*/metrics.json")):
        data = json.loads(metrics_path.read_text())
        for c in data.get("claims", []):
            if c["id"] in seen:
                raise ValueError(f"claim id {c['id']!r} is used by {seen[c['id']]} and {metrics_path}: "
                                 "ids name one claim across the ledger")
            seen[c["id"]] = metrics_path
            kind = c.get("kind")
            if kind not in by_kind:
                raise ValueError(f"{metrics_path}: claim {c['id']!r} has kind {kind!r}, not one of {CLAIM_KINDS}; "
                                 "re-run the notebook")
            by_kind[kind].append((bool(c["holds"]), f"{data['notebook']} ({data['profile']})", c))
    n_all = sum(len(v) for v in by_kind.values())
    n_hold = sum(h for v in by_kind.values() for h, _, _ in v)
    lines = [
        "# Claims ledger",
        "",
        f"Generated by `make figures` from `figures/*/metrics.json`: {n_hold} of {n_all} claims hold.",
        "A claim that does not hold is listed as such; nothing is retuned to make it pass.",
    ]
    for kind in CLAIM_KINDS:
        rows = sorted(by_kind[kind], key=lambda r: (not r[0], r[1]))  # stable: notebook order kept within
        if not rows:
            continue
        held = sum(h for h, _, _ in rows)
        lines += ["", f"## {kind}: {_KIND_TITLES[kind]} ({held} of {len(rows)} hold)", "",
                  "| holds | notebook | id | paper ref | claim | ours | paper's value | our threshold |",
                  "|---|---|---|---|---|---|---|---|"]
        for holds, where, c in rows:
            cells = ["yes" if holds else "**no**", where, c["id"], c["paper_ref"], c["statement"], c["ours"],
                     c["paper"], c.get("threshold")]
            lines.append("| " + " | ".join(_cell(v) for v in cells) + " |")
    lines.append("")
    path = root / "CLAIMS.md"
    atomic_write_text(path, "\n".join(lines))
    return path
