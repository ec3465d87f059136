"""load_ratings: every malformed CSV raises one error naming file, row and column
(property-based with hypothesis); valid tables round-trip."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klsc_lib.analysis.raters import Rating, RatingsError, load_ratings, write_ratings
from klsc_lib.analysis.raters.ratings import COLUMNS, RATER_KINDS
from klsc_lib.paper_values import METHODS, UNIT_KINDS

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1,
                max_size=8)
ratings_st = st.lists(st.builds(Rating, feature=names, method=st.sampled_from(METHODS), rater=names,
                                rater_kind=st.sampled_from(RATER_KINDS), score=st.integers(1, 4),
                                concept=st.text(max_size=20).map(str.strip), unit_kind=st.sampled_from(UNIT_KINDS)),
                      min_size=1, max_size=12, unique_by=lambda r: (r.unit_kind, r.feature, r.method, r.rater))
hyp = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _rows(ratings):
    return [[r.feature, r.method, r.rater, r.rater_kind, str(r.score), r.concept, r.unit_kind] for r in ratings]


def _write(rows, header=(*COLUMNS, "unit_kind")) -> Path:
    buf = io.StringIO()
    csv.writer(buf).writerows([list(header), *rows])
    path = Path(tempfile.mkdtemp()) / "ratings.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def _error(path) -> RatingsError:
    with pytest.raises(RatingsError) as info:
        load_ratings(path)
    assert str(path) in str(info.value)
    return info.value


@hyp
@given(ratings_st)
def test_valid_tables_round_trip(ratings):
    path = write_ratings(ratings, Path(tempfile.mkdtemp()) / "r.csv")
    assert load_ratings(path) == ratings
    assert load_ratings(path.parent) == ratings


@hyp
@given(ratings_st, st.data(), st.sampled_from(["method", "score", "rater_kind", "unit_kind"]))
def test_bad_value_names_row_and_column(ratings, data, column):
    i = data.draw(st.integers(0, len(ratings) - 1))
    bad = {"method": data.draw(names.filter(lambda s: s.strip() not in METHODS)),
           "score": data.draw(st.one_of(st.integers().filter(lambda n: not 1 <= n <= 4).map(str),
                                        st.sampled_from(["2.0", "2.5", " ", "three", "", "+3", "٣"]))),
           "rater_kind": data.draw(names.filter(lambda s: s.strip() not in RATER_KINDS)),
           "unit_kind": data.draw(names.filter(lambda s: s.strip() not in UNIT_KINDS))}[column]
    rows = _rows(ratings)
    rows[i][(*COLUMNS, "unit_kind").index(column)] = bad
    err = _error(_write(rows))
    assert (err.row, err.column) == (i + 2, column)


@hyp
@given(ratings_st, st.data())
def test_duplicate_names_both_rows(ratings, data):
    i = data.draw(st.integers(0, len(ratings) - 1))
    rows = _rows(ratings)
    dup = list(rows[i])
    dup[4] = "1" if dup[4] != "1" else "2"  # same (feature, method, rater), different score
    rows.append(dup)
    err = _error(_write(rows))
    assert err.row == len(rows) + 1 and err.column == "feature, method, rater"
    assert f"row {i + 2}" in err.problem


def test_duplicate_across_files_names_the_second_file(tmp_path):
    r = Rating("7", "MACO", "H1", "human", 2, "dog")
    write_ratings([r], tmp_path / "a.csv")
    write_ratings([r], tmp_path / "b.csv")
    err = _error(tmp_path)
    assert err.file == str(tmp_path / "b.csv") and err.row == 2 and str(tmp_path / "a.csv") in err.problem


@hyp
@given(ratings_st, st.sampled_from(COLUMNS))
def test_missing_column(ratings, column):
    header = [c for c in (*COLUMNS, "unit_kind") if c != column]
    j = (*COLUMNS, "unit_kind").index(column)
    err = _error(_write([r[:j] + r[j + 1:] for r in _rows(ratings)], header))
    assert (err.row, err.column) == (1, column)


@hyp
@given(ratings_st, st.data())
def test_non_utf8_names_row_and_column(ratings, data):
    i = data.draw(st.integers(0, len(ratings) - 1))
    j = data.draw(st.sampled_from([0, 2, 5]))  # feature, rater, concept
    rows = _rows(ratings)
    rows[i][j] = "\x00MARK"
    path = _write(rows)
    path.write_bytes(path.read_bytes().replace(b"\x00MARK", b"ok\xff\xfe"))
    err = _error(path)
    assert (err.row, err.column) == (i + 2, COLUMNS[j])


@pytest.mark.parametrize("content, row, column", [
    ("", 1, "(header)"),
    ("  \n\n", 1, "(header)"),
    (",".join(COLUMNS) + "\n", 2, "(all)"),
    (",".join(COLUMNS) + "\n1,MACO,H1,human,2,dog\n\n", 3, "(all)"),
    (",".join(COLUMNS) + "\n1,MACO,H1,human,2\n", 2, "score"),
    (",".join(COLUMNS) + "\n1,MACO,H1,human,2,dog,extra\n", 2, "concept"),
    (",".join(COLUMNS) + ",notes\n1,MACO,H1,human,2,dog,x\n", 1, "notes"),
    (",".join(COLUMNS) + "\n,MACO,H1,human,2,dog\n", 2, "feature"),
    (",".join(COLUMNS) + "\n1,MACO,,human,2,dog\n", 2, "rater"),
    (",".join(COLUMNS) + "\n1,maco,H1,human,2,dog\n", 2, "method"),
])
def test_structural_errors(tmp_path, content, row, column):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    err = _error(path)
    assert (err.row, err.column) == (row, column)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_ratings(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="no \\*.csv"):
        load_ratings(tmp_path)


def test_unit_kind_defaults_to_feature_and_bom_is_accepted(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeff".encode() + (",".join(COLUMNS) + "\nf1,TopK,G,ai,4,cat\n").encode())
    assert load_ratings(path) == [Rating("f1", "TopK", "G", "ai", 4, "cat", "Feature")]
