"""Are notebook 04's verdicts stable under another seed? Two runs' ``metrics.json``
(the same profile, different ``--seed``: other features, other development features,
other samples) compared on what the notebook concludes:

- every claim's verdict (holds / fails) in both runs;
- the rows of the table against the exact tilt, ranked by mean TV to q* in each run;
- each row's paired verdict against the chosen EnergyDPS ("closer to q*", "farther from
  q*", "inside the CI"): a row resolved one way in one run and the other way in the other
  contradicts; a row resolved in one run and inside the CI in the other does not.

The chosen single-pass variant may differ between runs (it is picked on each run's own
development features), so rows are compared by role: ``EnergyDPS (chosen)``.

    python -m klsc_lib.studies.seed_check figures/04_energydps figures/seed1/04_energydps \
        --out figures/seed1/SEED_CHECK.md
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from klsc_lib.runtime import atomic_write_text

CHOSEN = "EnergyDPS (chosen)"
RESOLVED = ("closer to q*", "farther from q*")


@dataclass(frozen=True)
class RunSummary:
    """What one run concludes: seed, chosen variant, claim verdicts, mean TV to q* per
    row (by role) and each row's paired verdict against the chosen sampler."""

    seed: int
    chosen: str
    claims: dict[str, bool]
    tv: dict[str, float]
    resolved: dict[str, str]


def _role(row: str, chosen: str) -> str:
    return CHOSEN if row == f"EnergyDPS ({chosen})" else row


def summarise(metrics: dict, source: str = "metrics.json") -> RunSummary:
    """A :class:`RunSummary` of notebook 04's ``metrics.json`` (as a dict); a file without the
    exact-tilt section raises, naming what is missing."""
    m = metrics.get("metrics", {})
    missing = [k for k in ("dev_chosen", "exact_resolved") if k not in m]
    if missing or "seed" not in metrics:
        raise ValueError(f"{source} has no {missing or ['seed']}: it is not a notebook 04 run with the exact-tilt "
                         "section (run `python -m klsc_lib.notebook_runner --seed S 04_energydps`)")
    chosen = m["dev_chosen"]["ours"]["single pass"]
    tv = {_role(k.removeprefix("exact/"), chosen): float(v["ours"]["tv_mean"][0])
          for k, v in m.items() if k.startswith("exact/")}
    resolved = {_role(k, chosen): v for k, v in m["exact_resolved"]["ours"].items()}
    claims = {c["id"]: bool(c["holds"]) for c in metrics.get("claims", [])}
    return RunSummary(int(metrics["seed"]), chosen, claims, tv, resolved)


@dataclass(frozen=True)
class SeedCheck:
    """The comparison of two runs (:func:`compare`)."""

    a: RunSummary
    b: RunSummary
    flipped_claims: list[str]  # verdict differs
    contradictions: list[str]  # rows resolved closer in one run and farther in the other
    same_ranking: bool  # the rows present in both runs, in the same order of mean TV

    @property
    def stable(self) -> bool:
        """No claim flipped and no row's paired verdict contradicts the other run's."""
        return not self.flipped_claims and not self.contradictions


def compare(a: RunSummary, b: RunSummary) -> SeedCheck:
    """Claims flipped, contradicting paired verdicts and whether the TV ranking is the same."""
    flipped = sorted(c for c in a.claims.keys() & b.claims.keys() if a.claims[c] != b.claims[c])
    contra = sorted(r for r in a.resolved.keys() & b.resolved.keys()
                    if {a.resolved[r], b.resolved[r]} == set(RESOLVED))
    rows = [r for r in a.tv if r in b.tv]
    same = sorted(rows, key=a.tv.get) == sorted(rows, key=b.tv.get)
    return SeedCheck(a, b, flipped, contra, same)


def to_markdown(check: SeedCheck) -> str:
    """The comparison as a short page: verdict, the claims table, the rows table."""
    a, b = check.a, check.b
    lines = [f"# Notebook 04 under two seeds ({a.seed} and {b.seed})", "",
             f"Chosen single-pass EnergyDPS: `{a.chosen}` (seed {a.seed}), `{b.chosen}` (seed {b.seed}).", "",
             ("**Stable**: no claim flips and no row's paired verdict against the chosen sampler contradicts."
              if check.stable else "**Not stable**: " + "; ".join(
                  ([f"claims flipped: {', '.join(check.flipped_claims)}"] if check.flipped_claims else [])
                  + ([f"rows resolved both ways: {', '.join(check.contradictions)}"] if check.contradictions else []))),
             f"The ranking by mean TV to q* is {'the same' if check.same_ranking else 'not the same'} in both runs.",
             "", f"| claim | seed {a.seed} | seed {b.seed} |", "|---|---|---|"]
    for c in sorted(a.claims.keys() | b.claims.keys()):
        cell = lambda s: ("holds" if s.claims[c] else "fails") if c in s.claims else "-"  # noqa: E731
        lines.append(f"| {c} | {cell(a)} | {cell(b)} |")
    lines += ["", f"| row | mean TV to q*, seed {a.seed} | seed {b.seed} | against the chosen, seed {a.seed} | "
              f"seed {b.seed} |", "|---|---|---|---|---|"]
    for r in sorted(a.tv.keys() | b.tv.keys(), key=lambda r: a.tv.get(r, float("inf"))):
        val = lambda s: f"{s.tv[r]:.3f}" if r in s.tv else "-"  # noqa: E731
        lines.append(f"| {r} | {val(a)} | {val(b)} | {a.resolved.get(r, '-')} | {b.resolved.get(r, '-')} |")
    return "\n".join(lines) + "\n"


def load_run(path: Path) -> dict:
    """A notebook 04 run's ``metrics.json`` (``path`` is the file or its folder)."""
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: run notebook 04 there first "
                                "(python -m klsc_lib.notebook_runner --seed S --out DIR 04_energydps)")
    return json.loads(file.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Compare two runs of notebook 04 (different seeds) on their verdicts.")
    p.add_argument("run_a", type=Path, help="a notebook 04 output folder or its metrics.json")
    p.add_argument("run_b", type=Path)
    p.add_argument("--out", type=Path, help="write the comparison there as markdown")
    args = p.parse_args(argv)
    check = compare(*(summarise(load_run(r), str(r)) for r in (args.run_a, args.run_b)))
    text = to_markdown(check)
    if args.out:
        atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
