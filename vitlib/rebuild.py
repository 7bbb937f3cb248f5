"""A build against the committed reference. `make report` builds a profile in build/<profile>/
(ignored by git) and never writes to report/<profile>/, the committed reference; at the end it
says how the build's numbers compare with the reference's (`vitlib.compare`). `check-report`
rebuilds from scratch and fails if a number moved beyond tolerance; `promote` makes a build the
new reference.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from . import findings
from .build import RECORDS, RENDERED, committed_files, execute, profile_parameters, say
from .compare import compare, counts
from .paths import BUILD_ENV, project_root, reference_dir
from .study import Study

NOT_COMMITTED = ("checkpoint.pt", "*.log")  # a saved run's weights and logs stay out of git
SHOWN = 6  # numbers beyond tolerance listed in the summary (all are in comparison.csv)


def _here(path: Path) -> str:
    """A path as the user reads it: relative to the project where it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(project_root().resolve()))
    except ValueError:
        return str(path)


def summarize(study: Study, echo=say) -> pd.DataFrame | None:
    """A few lines for the end of `make report`: where the build is and how its numbers compare with
    the committed reference; the whole comparison goes to build/<profile>/comparison.csv."""
    out, profile = study.out, study.profile
    made = " and ".join(_here(out / name) for name in ("report.pdf", "report.html") if (out / name).is_file())
    echo(f"Your report: {made or 'not rendered'}; its numbers: {_here(out / 'results.json')}")
    reference = reference_dir(profile) / "results.json"
    if study.folder != profile:
        echo(f"Settings other than params/{profile}.yaml: not compared with the committed reference.")
        return None
    if not reference.is_file():
        echo(f"No committed reference for the {profile} profile ({_here(reference)}): nothing to compare with.")
        return None
    table = comparison(findings.load(reference), findings.load(out / "results.json"), echo)
    table.to_csv(out / "comparison.csv", index=False)
    echo(f"  every number, side by side: {_here(out / 'comparison.csv')}")
    echo(
        f"The committed reference {_here(reference.parent)}/ is unchanged. To make this build the "
        f"reference (maintainers): make promote PROFILE={profile}"
    )
    return table


def comparison(committed: dict, rebuilt: dict, echo=say) -> pd.DataFrame:
    """Compare a rebuild's results with the committed ones and say so in a few lines."""
    table, same = compare(committed, rebuilt)
    say_comparison(table, same, committed, rebuilt, echo)
    return table


def say_comparison(table: pd.DataFrame, same: bool, committed: dict, rebuilt: dict, echo=say) -> None:
    """The few lines on a comparison `compare` made: the machines, the counts, what moved."""
    was, now = committed["built"], rebuilt["built"]
    n = counts(table)
    echo(
        f"Against the committed reference (built {was.get('date', '?')} on {was['machine'].get('cpu', '?')}, "
        f"commit {was.get('commit') or '?'}):"
    )
    if same:
        echo("  same CPU, Python and libraries as the reference: every number must come out identical")
    else:
        differ = ", ".join(
            f"{k} {was['machine'].get(k)!r} -> {v!r}" for k, v in now["machine"].items() if was["machine"].get(k) != v
        )
        echo(
            f"  another machine ({differ}): numbers may move by float rounding, within the tolerance of report/README.md"
        )
    line = f"  {n['equal']} of {len(table)} numbers equal, {n['within tolerance']} moved within tolerance"
    line += f", {n['MOVED']} beyond it" + (f", {n['missing']} missing" if n["missing"] else "")
    line += f" ({n['not checked']} not checked: p-values and numbers with no stated spread)" if n["not checked"] else ""
    echo(line)
    bad = table[~table["ok"]]
    for row in bad.head(SHOWN).itertuples():
        echo(
            f"  {row.verdict}: {row.number}: {_show(row.committed)} -> {_show(row.rebuilt)}"
            + (f" (tolerance {_show(row.tolerance)})" if row.verdict == "MOVED" and pd.notna(row.tolerance) else "")
        )
    if len(bad) > SHOWN:
        echo(f"  ... and {len(bad) - SHOWN} more")


def check(profile: str, echo=say) -> bool:
    """Rebuild a profile from scratch in a temporary folder and compare every number of its
    results.json with the committed one; print the comparison; True when every number holds."""
    profile_parameters(profile, quiet=True)  # an unknown profile is named as such
    committed = findings.load(reference_dir(profile) / "results.json")
    with tempfile.TemporaryDirectory(prefix=f"vitlib-check-{profile}-") as tmp:
        before = os.environ.get(BUILD_ENV)
        os.environ[BUILD_ENV] = tmp
        try:
            echo(f"Rebuilding the {profile} profile from scratch in {tmp} ...")
            execute(profile, echo=echo, resume_from_reference=False)
            rebuilt = findings.load(Path(tmp) / profile / "results.json")
        finally:
            if before is None:
                os.environ.pop(BUILD_ENV, None)
            else:
                os.environ[BUILD_ENV] = before
    table, same = compare(committed, rebuilt)
    shown = table.drop(columns="ok").assign(
        **{c: table[c].map(_show) for c in ("committed", "rebuilt", "difference", "tolerance")}
    )
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.max_colwidth", 60):
        echo(shown.to_string(index=False))
    say_comparison(table, same, committed, rebuilt, echo)
    moved = int((~table["ok"]).sum())
    echo(
        f"check-report {profile}: {len(table) - moved} of {len(table)} numbers hold"
        + (f"; {moved} do not" if moved else "")
    )
    return moved == 0


def promote(profile: str, echo=say) -> list[Path]:
    """Make build/<profile>/ the committed reference: copy its rendered report and results.json
    into report/<profile>/, and the newer versions of the saved runs the reference keeps. The
    files that were there are in git; `git diff` shows what changed."""
    study = profile_parameters(profile, quiet=True)[1]
    build, reference = study.out, reference_dir(profile)
    missing = [name for name in RENDERED if not (build / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{_here(build)}/ has no {', '.join(missing)}: nothing complete to promote. Fix: build it "
            f"first (`make report PROFILE={profile}`; the PDF needs LaTeX, see docs/reproducibility.md)"
        )
    results = findings.load(build / "results.json")
    if results["built"].get("commit", "").endswith("+modified"):
        echo(
            "Note: this build ran with uncommitted changes in vitlib/, notebooks/ or params/; its "
            "results.json says so. Commit them together with the promoted report."
        )
    reference.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in RENDERED:
        shutil.copy2(build / name, reference / name)
        copied.append(reference / name)
    kept_here = {p.relative_to(reference).parts[0] for p in committed_files(reference)} - set(RENDERED + RECORDS)
    for name in sorted(kept_here):
        source = build / name
        files = [source] if source.is_file() else sorted(source.rglob("*")) if source.is_dir() else []
        for f in files:
            if f.is_file() and not any(f.match(pattern) for pattern in NOT_COMMITTED):
                target = reference / f.relative_to(build)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
                copied.append(target)
    echo(
        f"Promoted {_here(build)}/ to the reference {_here(reference)}/ ({len(copied)} files). Next: "
        f"`git diff --stat {_here(reference)}`, `make readme`, then commit them together."
    )
    return copied


def _show(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:+.6g}" if value and abs(value) < 1e-3 else f"{value:.6g}"
    return str(value)
