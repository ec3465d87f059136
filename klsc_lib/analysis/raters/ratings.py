"""The ratings table of the blinded study (paper Sec 3.3, App K, App L.1) and its strict loader.

Long format, one row per (feature, method, rater): ``feature, method, rater,
rater_kind, score, concept`` plus an optional ``unit_kind`` column (``Feature`` or
``Neuron``, App L.1; ``Feature`` when absent). A study may be one CSV or a folder of
CSVs (one per rater, say). :func:`load_ratings` refuses anything it cannot read
exactly, with an error naming the file, row and column; no row is ever dropped.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

from klsc_lib.paper_values import METHODS, UNIT_KINDS
from klsc_lib.runtime import atomic_path

RATER_KINDS = ("human", "ai", "simulated")
COLUMNS = ("feature", "method", "rater", "rater_kind", "score", "concept")
OPTIONAL_COLUMNS = ("unit_kind",)
SCORES = (1, 2, 3, 4)  # App K rubric


@dataclass(frozen=True)
class Rating:
    """One rater's score and concept description for one (unit, method) grid."""

    feature: str
    method: str
    rater: str
    rater_kind: str
    score: int
    concept: str
    unit_kind: str = "Feature"


class RatingsError(ValueError):
    """A ratings CSV that cannot be read exactly; names the file, row and column.

    Rows count CSV records as a spreadsheet shows them (1 = header), so a quoted
    field spanning lines is one row."""

    def __init__(self, file: str | Path, row: int, column: str, problem: str):
        self.file, self.row, self.column, self.problem = str(file), row, column, problem
        super().__init__(f"{file}: row {row}, column {column!r}: {problem}")


def _csv_files(path: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(path, (list, tuple)):
        return [f for p in path for f in _csv_files(p)]
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise FileNotFoundError(f"no *.csv ratings files in folder {path}")
        return files
    if not path.exists():
        raise FileNotFoundError(f"ratings file {path} does not exist; pass a CSV file or a folder of CSV files")
    return [path]


def _decode(file: Path) -> str:
    raw = file.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_start = raw.rfind(b"\n", 0, err.start) + 1
        before = list(csv.reader(io.StringIO(raw[:line_start].decode("utf-8"), newline="")))
        header = before[0] if before else []
        prefix = next(csv.reader([raw[line_start:err.start].decode("utf-8")]), [""])
        col = len(prefix) - 1
        column = header[col].strip() if col < len(header) else f"#{col + 1}"
        raise RatingsError(file, len(before) + 1, column, f"byte {raw[err.start]:#x} is not UTF-8 text; save the "
                                                          "file as UTF-8") from None


def _parse_row(file: Path, row: int, record: dict[str, str]) -> Rating:
    def need(column: str) -> str:
        value = record[column].strip()
        if not value:
            raise RatingsError(file, row, column, "empty value")
        return value

    method = need("method")
    if method not in METHODS:
        raise RatingsError(file, row, "method", f"unknown method {method!r}; expected one of {METHODS}")
    kind = need("rater_kind")
    if kind not in RATER_KINDS:
        raise RatingsError(file, row, "rater_kind", f"unknown rater kind {kind!r}; expected one of {RATER_KINDS}")
    text = record["score"].strip()
    if not (text.isascii() and text.isdigit() and int(text) in SCORES):
        raise RatingsError(file, row, "score", f"score {text!r} is not an integer in 1-4 (App K rubric)")
    unit_kind = record.get("unit_kind", "").strip() or "Feature"
    if unit_kind not in UNIT_KINDS:
        raise RatingsError(file, row, "unit_kind", f"unknown unit kind {unit_kind!r}; expected one of {UNIT_KINDS}")
    return Rating(feature=need("feature"), method=method, rater=need("rater"), rater_kind=kind, score=int(text),
                  concept=record["concept"].strip(), unit_kind=unit_kind)


def _read_file(file: Path, seen: dict[tuple[str, str, str, str], tuple[Path, int]]) -> list[Rating]:
    text = _decode(file)
    if not text.strip():
        raise RatingsError(file, 1, "(header)", f"empty file; expected a header {','.join(COLUMNS)}")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    row = 1
    try:
        header = [h.strip() for h in next(reader)]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise RatingsError(file, 1, missing[0], f"missing column(s) {missing}; the header must hold {COLUMNS}")
        extra = [c for c in header if c not in COLUMNS + OPTIONAL_COLUMNS]
        if extra or len(set(header)) != len(header):
            bad = extra[0] if extra else next(h for h in header if header.count(h) > 1)
            raise RatingsError(file, 1, bad, f"unexpected or repeated column; allowed: {COLUMNS + OPTIONAL_COLUMNS}")
        out = []
        for values in reader:
            row += 1
            if not any(v.strip() for v in values):
                raise RatingsError(file, row, "(all)", "blank row; remove it")
            if len(values) != len(header):
                raise RatingsError(file, row, header[min(len(values), len(header)) - 1],
                                   f"{len(values)} fields, header has {len(header)}")
            rating = _parse_row(file, row, dict(zip(header, values)))
            key = (rating.unit_kind, rating.feature, rating.method, rating.rater)
            if key in seen:
                first_file, first_row = seen[key]
                raise RatingsError(file, row, "feature, method, rater",
                                   f"duplicate of {first_file} row {first_row} ({rating.unit_kind} {rating.feature}, "
                                   f"{rating.method}, rater {rating.rater})")
            seen[key] = (file, row)
            out.append(rating)
    except csv.Error as err:
        raise RatingsError(file, row + 1, "(row)", f"malformed CSV: {err}") from None
    if not out:
        raise RatingsError(file, 2, "(all)", "header but no ratings")
    return out


def load_ratings(path: str | Path | Sequence[str | Path]) -> list[Rating]:
    """Read and validate one ratings CSV, a folder of them, or a list of both.

    Raises :class:`RatingsError` for an unknown method / rater kind / unit kind, a score
    that is not an integer in 1-4, a duplicate (unit, method, rater) across all files,
    a missing or unknown column, an empty file, a ragged row and non-UTF-8 text.
    """
    seen: dict[tuple[str, str, str, str], tuple[Path, int]] = {}
    return [r for f in _csv_files(path) for r in _read_file(f, seen)]


def write_ratings(ratings: Iterable[Rating], path: str | Path) -> Path:
    """Write ratings in the long format :func:`load_ratings` reads (atomically)."""
    names = [f.name for f in fields(Rating)]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        writer.writerows(asdict(r) for r in ratings)
    return Path(path)
