"""The README's headline table and figure are generated from the committed results and must stay equal to them."""

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

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
    text = (ROOT / "README.md").read_text()
    assert not re.search(r"\b(issue \d+|commit [0-9a-f]{7}|\d+ tests\b|\d+ passed)", text, re.I)
    assert len(text.splitlines()) <= 180


def test_the_committed_figure_is_drawn_from_the_committed_results(tmp_path):
    """docs/headline.png carries the numbers it draws: they equal the committed results exactly, on
    any machine; and it looks like what scripts/readme.py draws now (byte for byte where matplotlib,
    FreeType and the font are the ones that made it, within a small pixel tolerance elsewhere)."""
    committed = readme.committed_results(ROOT / "report")
    assert readme.FIGURE.is_file(), "docs/headline.png is missing: run `make readme`"
    rows = readme.bars(committed)
    assert readme.figure_rows(readme.FIGURE) == json.loads(json.dumps(rows)), (
        "docs/headline.png shows other numbers than report/*/results.json: run `make readme`"
    )
    drawn = tmp_path / "headline.png"
    readme.write_figure(rows, drawn)
    assert readme.same_figure(readme.FIGURE, drawn), "docs/headline.png is stale: run `make readme`"
    assert readme.FIGURE.stat().st_size < 100_000, "the README's figure stays small"


def test_the_figure_is_deterministic_and_follows_the_results(tmp_path):
    committed = readme.committed_results(ROOT / "report")
    rows = readme.bars(committed)
    readme.write_figure(rows, tmp_path / "a.png")
    readme.write_figure(rows, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes(), "the same rows, the same bytes"
    with Image.open(tmp_path / "a.png") as image:
        assert not {"Software", "Creation Time"} & set(image.info), "no version or date in the PNG"
    # One row per test accuracy of the headline table, each read from its report.
    assert len(rows) == len(readme.headline(committed).splitlines()) - 2
    seed = committed["seed"]["numbers"]
    changed = {**committed, "seed": {**committed["seed"], "numbers": {**seed}}}
    changed["seed"]["numbers"]["seeds.test_accuracy.mean"] = {**seed["seeds.test_accuracy.mean"], "value": 0.5}
    other = readme.bars(changed)
    assert other != rows and any(row["accuracy"] == 0.5 for row in other)
    readme.write_figure(other, tmp_path / "other.png")
    assert not readme.same_figure(tmp_path / "a.png", tmp_path / "other.png")
    laptop = committed["laptop"]["numbers"]
    assert rows[-1]["interval"] == [
        laptop["final.test_accuracy.ci_low"]["value"],
        laptop["final.test_accuracy.ci_high"]["value"],
    ]


def test_the_figure_uses_the_font_matplotlib_ships():
    """DejaVu Sans from matplotlib's own data, not a system copy of another version."""
    import matplotlib
    from matplotlib import font_manager

    with readme._style():
        font = Path(font_manager.findfont(font_manager.FontProperties(), fallback_to_default=False))
    assert font.is_relative_to(Path(matplotlib.get_data_path())), font


def test_the_readme_shows_the_figure_with_alt_text():
    text = (ROOT / "README.md").read_text()
    images = re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", text)
    assert [path for _, path in images] == ["docs/headline.png"], "one figure, the generated one"
    alt = images[0][0]
    assert "accuracies" in alt and "0 to 100%" in alt
    headline_section = text.split("## Headline results", 1)[1].split("\n## ", 1)[0]
    assert "](docs/headline.png)" in headline_section
    assert len(text.splitlines()) <= 100


def test_what_counts_as_the_same_figure(tmp_path):
    """Equal rows are required; the pixels are compared where the same versions drew both (a
    layout change fails), and left to the rows where other versions drew one of them."""
    rows = readme.bars(readme.committed_results(ROOT / "report"))
    drawn = tmp_path / "drawn.png"
    readme.write_figure(rows, drawn)

    def resaved(name, pixels=None, **text):
        with Image.open(drawn) as image:
            image.load()
            info = PngImagePlugin.PngInfo()
            for key, value in {**image.text, **text}.items():
                if value is not None:
                    info.add_text(key, value)
            out = image.convert("RGB") if pixels is None else Image.fromarray(pixels)
        out.save(tmp_path / name, format="PNG", pnginfo=info)
        return tmp_path / name

    with Image.open(drawn) as image:
        moved = np.roll(np.asarray(image.convert("RGB")), 3, axis=0)  # everything 3 pixels lower
    assert readme.same_figure(drawn, resaved("recoded.png"))  # other bytes, same pixels
    assert not readme.same_figure(drawn, resaved("moved.png", moved))
    assert readme.same_figure(drawn, resaved("elsewhere.png", moved, Source="matplotlib 0.0, FreeType 0.0, Pillow 0.0"))
    assert not readme.same_figure(drawn, resaved("unknown.png", Source=None))
    assert not readme.same_figure(drawn, resaved("no_rows.png", Description=None))
