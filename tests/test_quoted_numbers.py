"""Numbers quoted in the README, the docs and the notebooks' markdown agree with the
metrics files they name (klsc_lib.quoted): the repository's prose, and the checker's own
behaviour on planted texts (a drifted number, a wrong verdict, a bad reference)."""

from __future__ import annotations

import json
import re

import pytest

from klsc_lib.quoted import ROOT, Sources, check_repository, check_text, checked_files, markdown_of, resolve


def test_every_quoted_number_matches_its_metric():
    problems, n = check_repository()
    assert not problems, "\n".join(problems)
    assert n >= 100  # the README's table, its results and the notebooks' "What we see" cells


def test_readme_claims_table_marks_every_number_and_verdict():
    """The first screen's claim / paper / ours / holds table: each row's verdict is checked
    against the ledger, and every number in its 'ours' cell carries a reference."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| claim of the paper |"):].split("\n\n")[0].splitlines()[2:]
    assert len(table) >= 6
    for row in table:
        cells = row.split(" | ")
        ours, holds = cells[2], cells[3]
        assert "<!--holds" in holds or holds.strip(" |") == "–", row
        if "<!--holds" in holds:  # a row tested by a notebook: its own numbers come from a metrics file
            unmarked = re.sub(r"<!--.*?-->", "", re.sub(r"\d+(?:\.\d+)?<!--=.*?-->", "", ours))
            assert not re.search(r"\d\.\d", unmarked), f"an unreferenced decimal in: {ours}"


@pytest.fixture()
def sources(tmp_path):
    """A fake repository with one notebook's metrics.json."""
    folder = tmp_path / "figures" / "04_demo"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "notebook": "04_demo", "wall_time_s": 217.49,
        "metrics": {"table3/EnergyDPS": {"ours": {"KID backbone": [0.0369, -0.0077, 0.0816], "psi_over_t": [0.9658]},
                                         "paper": {"psi": 16.2}},
                    "depth/stages.2.blocks.0": {"ours": {"explained_variance": 0.9367}},
                    "neurons": {"ours": {"n": 64}},
                    "table11": {"ours": {"paper_config": {"s": 5.867}, "fast": {"s": 0.3086}}},
                    "mib": {"ours": 9697}},
        "claims": [{"id": "energydps_best_concept", "holds": False, "ours": {"MACO": 0.53}},
                   {"id": "kid_lowest", "holds": True, "ours": 0.0369}]}))
    other = tmp_path / "figures" / "seed1" / "04_demo"  # another run of the same notebook
    other.mkdir(parents=True)
    (other / "metrics.json").write_text(json.dumps({"metrics": {"neurons": {"ours": {"n": 32}}},
                                                    "claims": [{"id": "kid_lowest", "holds": False}]}))
    (tmp_path / "figures" / "scale").mkdir()  # notebook 04's table at a larger scale (studies.scale_check)
    (tmp_path / "figures" / "scale" / "metrics.json").write_text(json.dumps({"maco_halfwidth": 0.0213}))
    (tmp_path / "figures" / "scale" / "half").mkdir()  # another scale-check run, in its own folder
    (tmp_path / "figures" / "scale" / "half" / "metrics.json").write_text(json.dumps({"maco_halfwidth": 0.0311}))
    return Sources(tmp_path)


@pytest.mark.parametrize("text", [
    "KID 0.037<!--= 04:table3/EnergyDPS.KID backbone.0 --> against",
    "KID 0.0369<!--= 04:table3/EnergyDPS.ours.KID backbone.0 -->",  # explicit 'ours', more digits
    "psi/t 97<!--= 04:table3/EnergyDPS.psi_over_t.0 * 100 --> %",
    "explained variance 0.937<!--= 04:depth/stages.2.blocks.0.explained_variance -->",  # a key holding dots
    "down to −0.008<!--= 04:table3/EnergyDPS.KID backbone.1 -->",  # a (Unicode) minus sign
    "all 64<!--= 04:neurons.n --> neurons",
    "x19.0<!--= 04:table11.paper_config.s / 04:table11.fast.s --> cheaper",
    "**0.037**<!--= 04:table3/EnergyDPS.KID backbone.0 --> in bold",
    "9 697<!--= 04:mib --> MiB",  # thousands grouped by a space
    "about 20<!--= 04:table11.paper_config.s / 04:table11.fast.s ~10% -->x",
    "the paper's 16.2<!--= 04:table3/EnergyDPS.paper.psi -->",
    "the claim fails<!--holds 04:energydps_best_concept -->, the other holds<!--holds 04:kid_lowest -->",
    "in `0.5<!--= 04:neurons.n -->` code spans markers are examples, not quotes",
    "64<!--= 04:neurons.n --> here, 32<!--= seed1/04:neurons.n --> in the other run, where it fails<!--holds seed1/04:kid_lowest -->",
    "half-width 0.021<!--= scale:maco_halfwidth --> at scale",
    "0.031<!--= scale/half:maco_halfwidth --> in the other run, 0.021<!--= scale:maco_halfwidth --> in the first",
])
def test_quotes_that_agree_pass(sources, text):
    problems, n = check_text(text, sources, "t.md")
    assert problems == []
    assert n == text.count("<!--") - ("`0.5<!--" in text)


@pytest.mark.parametrize("text, says", [
    ("KID 0.038<!--= 04:table3/EnergyDPS.KID backbone.0 -->", "0.038"),  # drifted beyond its rounding
    ("KID 0.04<!--= 04:table3/EnergyDPS.KID backbone.0 --> and 0.0370<!--= 04:table3/EnergyDPS.KID backbone.0 -->",
     "0.0370"),  # more digits written, less tolerance
    ("psi/t 96<!--= 04:table3/EnergyDPS.psi_over_t.0 * 100 --> %", "96"),
    ("neurons 20.1<!--= 04:neurons.n -->-37.5<!--= 04:neurons.n --> %", "37.5"),  # a range: two positive numbers
    ("KID −0.037<!--= 04:table3/EnergyDPS.KID backbone.0 -->", "-0.037"),  # the sign counts
    ("9 679<!--= 04:mib --> MiB", "9 679"),
    ("x25<!--= 04:table11.paper_config.s / 04:table11.fast.s ~10% -->", "25"),
    ("the claim holds<!--holds 04:energydps_best_concept -->", "'holds'"),
    ("0.021<!--= scale/half:maco_halfwidth --> read from the other run", "0.021"),
])
def test_a_drifted_number_or_verdict_fails(sources, text, says):
    problems, _ = check_text(text, sources, "t.md")
    assert problems and any(says in p for p in problems), problems
    assert problems[-1].startswith("t.md:1: ")


@pytest.mark.parametrize("text, why", [
    ("KID 0.037<!--= 04:table3/EnergyDPS.KID vit.0 -->", "has no"),  # a key that does not exist
    ("KID 0.037<!--= 09:table3 -->", "expected one"),  # no such notebook
    ("n 32<!--= seed2/04:neurons.n -->", "expected one figures/seed2/04_*"),  # no such run
    ("KID<!--= 04:table3/EnergyDPS.KID backbone.0 -->", "no number"),  # nothing quoted
    ("table<!--= 04:table3/EnergyDPS -->", "no number"),
    ("n 1<!--= 04:table3/EnergyDPS.KID backbone -->", "not a number"),  # a list, not a number
    ("it is true<!--holds 04:energydps_best_concept -->", "not a verdict word"),
    ("no<!--holds 04:no_such_claim -->", "no claim"),
])
def test_a_bad_reference_fails(sources, text, why):
    problems, _ = check_text(text, sources, "t.md")
    assert len(problems) == 1 and why in problems[0], problems


def test_resolve_prefers_the_longest_key_and_reaches_into_ours():
    doc = {"metrics": {"a.b": {"ours": {"c": [1.5, 2.5]}}, "a": {"ours": {"b": 9}}}}
    assert resolve(doc, "a.b.c.1") == 2.5
    assert resolve(doc, "metrics.a.ours.b") == 9
    assert resolve(doc, "a") == {"b": 9}


def test_the_checker_reads_markdown_cells_only(tmp_path):
    nb = tmp_path / "x.py"
    nb.write_text("# %% [markdown]\n# KID 0.5<!--= 04:neurons.n -->\n\n# %%\nx = 1  # 0.5<!--= 04:neurons.n -->\n")
    md = markdown_of(nb)
    assert md.count("<!--=") == 1 and md.splitlines()[1].startswith("KID 0.5")
    assert {p.name for p in checked_files()} >= {"README.md", "miniworld.md", "04_energydps.py", "05_rater_study.py"}
