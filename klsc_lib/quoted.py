"""Numbers quoted in prose, checked against the files they come from.

The README, the docs and the notebooks' markdown quote results. A quoted number that
comes from a ``figures/NN_name/metrics.json`` (or the shipped mini-world's
``quality.json``) carries a reference in an HTML comment right after it, invisible
once rendered::

    EnergyDPS's KID is 0.037<!--= 04:table3/EnergyDPS.KID backbone.0 --> against ...
    88<!--= 03:claims.features_beat_neurons.ours.features * 100 --> % of features
    the claim fails<!--holds 04:energydps_best_concept -->

``<!--= SOURCE:PATH [OP OPERAND]... [~R%] -->`` names a number: ``SOURCE`` is a
notebook's number (``04`` for ``figures/04_energydps``; ``seed1/04`` for another run of it in
``figures/seed1/04_energydps``), ``scale`` (notebook 04's table at a larger scale,
``figures/scale/metrics.json``; ``scale/RUN`` another such run in ``figures/scale/RUN``) or
``quality`` (the default world's ``quality.json``);
``PATH`` walks the JSON with dots (see :func:`resolve`); ``OP`` is one of ``* / + -``
(spaces around it) with a number or another ``SOURCE:PATH`` as operand, evaluated left to
right. The quoted number must equal the value to within half a unit of its last written
digit (``0.037`` allows 0.0005), or within ``R`` percent when ``~R%`` is given (for "about" numbers).

``<!--holds SOURCE:CLAIM_ID -->`` follows a verdict word (yes / no / holds / fails /
held / failed); the word must agree with the claim's ``holds`` in the ledger.

:func:`check_text` returns one message per mismatch; ``tests/test_quoted_numbers.py``
runs it over every file in :data:`CHECKED`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]

#: Files whose quoted numbers are checked (notebooks: their markdown cells).
CHECKED = ("README.md", "docs/*.md", "notebooks/*.py")

_MARK = re.compile(r"<!--=\s*(?P<spec>.*?)\s*-->", re.S)
_HOLDS = re.compile(r"<!--holds\s+(?P<spec>.*?)\s*-->", re.S)
# A number as written: thousands grouped by (thin) spaces, decimals, an exponent.
_NUMBER = re.compile(r"\d{1,3}(?:[ \u2009\u202f]\d{3})+(?:\.\d+)?(?![\d.])|\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_CODE = re.compile(r"`[^`\n]*`")
_OP = re.compile(r"\s([*/+-])\s")
_VERDICT = {"yes": True, "holds": True, "held": True, "no": False, "fails": False, "failed": False}


class QuoteError(ValueError):
    """A reference that does not resolve to a number."""


@dataclass(frozen=True)
class Quote:
    where: str  # file:line
    text: str  # the number as written
    value: float  # the number as written, parsed
    decimals: int
    spec: str


def _children(node: Any) -> dict[str, Any]:
    if isinstance(node, dict):
        return node
    if isinstance(node, list):
        if node and all(isinstance(x, dict) and "id" in x for x in node):
            return {x["id"]: x for x in node}
        return {str(i): x for i, x in enumerate(node)}
    return {}


def resolve(doc: Any, path: str) -> Any:
    """Walk ``doc`` along ``path``. Components are separated by dots, but a key that holds
    dots or spaces (``stages.2.blocks.0``, ``KID backbone``) matches whole: the longest
    run of components that is a key wins. A list is indexed by position, a list of
    claims by claim id. Two shortcuts keep references short: a name that is not at the
    top of a metrics.json is looked up in its ``metrics``, and in a ``{"ours": ...,
    "paper": ...}`` entry a name that is not one of its keys is looked up in ``ours``."""
    parts = path.split(".")
    node, i, trail = doc, 0, []
    while i < len(parts):
        kids = _children(node)
        for j in range(len(parts), i, -1):
            key = ".".join(parts[i:j])
            if key in kids:
                node, i = kids[key], j
                trail.append(key)
                break
        else:
            if isinstance(node, dict) and not trail and "metrics" in node:
                node = node["metrics"]
                trail.append("metrics")
            elif isinstance(node, dict) and "ours" in node:
                node = node["ours"]
                trail.append("ours")
            else:
                raise QuoteError(f"{'.'.join(trail) or '<top>'} has no {'.'.join(parts[i:])!r}")
    if isinstance(node, dict) and "ours" in node:  # a metric entry named whole: its value
        node = node["ours"]
    return node


class Sources:
    """The JSON files references name, read once."""

    def __init__(self, root: str | Path = ROOT):
        self.root = Path(root)
        self._cache: dict[str, Any] = {}

    def __call__(self, name: str) -> Any:
        if name not in self._cache:
            self._cache[name] = json.loads(self._path(name).read_text())
        return self._cache[name]

    def _path(self, name: str) -> Path:
        if name == "quality":
            world = self("03")["metrics"]["world/config_hash"]["ours"]
            return self.root / "klsc_lib" / "worlds" / "miniworld" / "weights" / world / "quality.json"
        if name == "scale" or name.startswith("scale/"):  # klsc_lib.scale_check runs: figures/scale[/RUN]
            path = self.root / "figures" / name / "metrics.json"
            if not path.is_file():
                raise QuoteError(f"source {name!r}: {path} not found (make scale-check writes it)")
            return path
        run, _, nb = name.rpartition("/")  # "seed1/04": figures/seed1/04_*, another run of notebook 04
        pattern = f"figures/{run + '/' if run else ''}{nb}_*/metrics.json"
        found = sorted(self.root.glob(pattern))
        if len(found) != 1:
            raise QuoteError(f"source {name!r}: expected one {pattern}, found {len(found)}")
        return found[0]

    def number(self, ref: str) -> float:
        source, sep, path = ref.partition(":")
        if not sep:
            try:
                return float(ref)
            except ValueError:
                raise QuoteError(f"{ref!r} is neither a number nor SOURCE:PATH") from None
        value = resolve(self(source.strip()), path.strip())
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise QuoteError(f"{ref} is {type(value).__name__}, not a number")
        return float(value)

    def claim(self, ref: str) -> dict:
        source, _, claim_id = ref.partition(":")
        for c in self(source.strip()).get("claims", []):
            if c["id"] == claim_id.strip():
                return c
        raise QuoteError(f"no claim {claim_id!r} in {source}")


def evaluate(spec: str, sources: Callable[[str], float]) -> tuple[float, float | None]:
    """The value a marker names and its relative tolerance (None: the written digits')."""
    rel = None
    m = re.search(r"\s~(\d+(?:\.\d+)?)%$", spec)
    if m:
        rel, spec = float(m.group(1)) / 100, spec[:m.start()]
    tokens = _OP.split(" " + spec.strip() + " ")
    value = sources(tokens[0].strip())
    for op, operand in zip(tokens[1::2], tokens[2::2]):
        x = sources(operand.strip())
        value = {"*": value * x, "/": value / x, "+": value + x, "-": value - x}[op]
    return value, rel


def _quoted_number(before: str) -> tuple[str, float, int]:
    """The last number in the 40 characters before a marker (a unit, '%' or '**' may sit
    between): (as written, value, decimals written). A '-' or '−' right before it is a
    sign only after a space, '(' or a line start (so "20-37" is two positive numbers)."""
    tail = before[-40:]
    found = list(_NUMBER.finditer(tail))
    if not found or len(tail) - found[-1].end() > 12:
        raise QuoteError(f"no number right before the marker: {tail!r}")
    m = found[-1]
    plain = re.sub(r"[ \u2009\u202f]", "", m.group())
    s = m.start()
    negative = s >= 1 and tail[s - 1] in "-\u2212" and (s == 1 or tail[s - 2] in " (\n[|")
    mantissa, _, exp = plain.partition("e")
    decimals = len(mantissa.partition(".")[2]) - int(exp or 0)
    return ("-" if negative else "") + m.group(), (-1 if negative else 1) * float(plain), decimals


def quotes_and_verdicts(text: str, where: str = "") -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """(marker spec, text before it, location) for every number marker and verdict marker."""
    def loc(pos: int) -> str:
        return f"{where}:{text.count(chr(10), 0, pos) + 1}"
    text = _CODE.sub(lambda m: " " * len(m.group()), text)  # markers in code spans are examples
    nums = [(m.group("spec"), text[:m.start()], loc(m.start())) for m in _MARK.finditer(text)]
    verdicts = [(m.group("spec"), text[:m.start()], loc(m.start())) for m in _HOLDS.finditer(text)]
    return nums, verdicts


def _strip_markers(text: str) -> str:
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def check_text(text: str, sources: Sources, where: str = "") -> tuple[list[str], int]:
    """Mismatches in ``text`` (messages) and the number of references checked."""
    problems, n = [], 0
    nums, verdicts = quotes_and_verdicts(text, where)
    for spec, before, at in nums:
        n += 1
        try:
            written, quoted, decimals = _quoted_number(_strip_markers(before[-600:]))
            value, rel = evaluate(spec, sources.number)
        except (QuoteError, KeyError, ZeroDivisionError) as err:
            problems.append(f"{at}: <!--= {spec} -->: {err}")
            continue
        tol = abs(value) * rel if rel is not None else 0.5 * 10.0 ** (-decimals)
        if not math.isfinite(value) or abs(quoted - value) > tol * (1 + 1e-9) + 1e-12:
            problems.append(f"{at}: the text says {written}, {spec} is {value:.6g}")
    for spec, before, at in verdicts:
        n += 1
        word = re.search(r"(\w+)\W*$", _strip_markers(before[-600:]))
        try:
            holds = sources.claim(spec)["holds"]
        except QuoteError as err:
            problems.append(f"{at}: <!--holds {spec} -->: {err}")
            continue
        said = _VERDICT.get(word.group(1).lower()) if word else None
        if said is None:
            problems.append(f"{at}: <!--holds {spec} --> follows {word and word.group(1)!r}, not a verdict word")
        elif said != holds:
            problems.append(f"{at}: the text says {word.group(1)!r}, the ledger says holds={holds} for {spec}")
    return problems, n


def markdown_of(path: Path) -> str:
    """A file's prose: a notebook source's markdown cells (jupytext percent format, the
    ``# `` prefixes removed, code cells blanked so line numbers stay), else the file."""
    text = path.read_text()
    if path.suffix != ".py":
        return text
    out, in_md = [], False
    for line in text.splitlines():
        if line.startswith("# %%"):
            in_md = "[markdown]" in line
            out.append("")
        elif in_md:
            out.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        else:
            out.append("")
    return "\n".join(out)


def checked_files(root: str | Path = ROOT) -> list[Path]:
    root = Path(root)
    return sorted(p for pattern in CHECKED for p in root.glob(pattern))


def check_repository(root: str | Path = ROOT) -> tuple[list[str], int]:
    """Every mismatch in :data:`CHECKED` files, and the number of references checked."""
    root, sources = Path(root), Sources(root)
    problems, n = [], 0
    for path in checked_files(root):
        p, k = check_text(markdown_of(path), sources, str(path.relative_to(root)))
        problems += p
        n += k
    return problems, n
