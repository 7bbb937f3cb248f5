"""The README's headline is generated from the committed results and must stay equal to them."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_script", ROOT / "scripts" / "readme.py")
readme = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme)


def test_readme_headline_equals_the_committed_results():
    text = (ROOT / "README.md").read_text()
    committed = readme.committed_results(ROOT / "report")
    assert {"seed", "full", "laptop"} <= set(committed), "each report commits its results.json"
    assert readme.updated(text, readme.headline(committed)) == text, "README.md's headline is stale: run `make readme`"


def test_the_headline_states_each_reports_own_numbers():
    """A row per claim, each value read from the report that states it (not a restatement: a
    results file with another number gives another table)."""
    committed = readme.committed_results(ROOT / "report")
    table = readme.headline(committed)
    rows = table.splitlines()[2:]
    assert 3 <= len(rows) <= 5
    seed = committed["seed"]["numbers"]
    assert f"{seed['ablation.original.mean']['value']:.2%} ± {seed['ablation.original.std']['value']:.2%}" in table
    changed = {**committed, "seed": {**committed["seed"], "numbers": {**seed}}}
    changed["seed"]["numbers"]["seeds.test_accuracy.mean"] = {**seed["seeds.test_accuracy.mean"], "value": 0.5}
    assert "50.00% ±" in readme.headline(changed) and "50.00% ±" not in table


def test_a_readme_without_the_markers_is_refused():
    with pytest.raises(ValueError, match="put the two markers back"):
        readme.updated("# no markers\n", "| table |")


def test_the_readme_says_no_history():
    """History belongs in CHANGELOG.md: no commit hashes, issue numbers or hand-typed test counts."""
    import re

    text = (ROOT / "README.md").read_text()
    assert not re.search(r"\b(issue \d+|commit [0-9a-f]{7}|\d+ tests\b|\d+ passed)", text, re.I)
    assert len(text.splitlines()) <= 180
