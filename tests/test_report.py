import shutil

import pandas as pd
import pytest

from vitlib.selection import SelectionResult
from vitlib.selection_report import grid_effects_text, main_effects
from vitlib.study_report import ablation_conclusion
from vitlib.tables import Table


def test_grid_effects_average_over_the_rest_of_the_grid():
    summary = pd.DataFrame(
        {
            "lr": [0.1, 0.1, 0.01, 0.01],
            "depth": [1, 2, 1, 2],
            "val_error_mean": [0.30, 0.20, 0.10, 0.40],
            "val_error_std": [0.01] * 4,
            "failed_folds": [0, 0, 0, 0],
        }
    )
    result = SelectionResult(pd.DataFrame(), summary, {"lr": 0.01, "depth": 1}, ["lr", "depth"])
    table = main_effects(result)
    assert table.loc[(table.setting == "lr") & (table.value == "0.1"), "mean"].item() == pytest.approx(0.25)
    assert table.loc[(table.setting == "depth") & (table.value == "2"), "mean"].item() == pytest.approx(0.30)
    text = grid_effects_text(result).data
    assert "**lr**: the same on average for all its values (25.00%)" in text  # a tie is not ranked
    assert (
        "**depth**: best on average at 1 (20.00%), worst at 2 (30.00%), a spread of 10.00 points, more than fold noise"
        in text
    )
    assert "So depth moves the average by more than fold noise" in text
    assert "unstable" not in text  # no configuration's folds disagree wildly


def test_grid_effects_name_the_unstable_configurations():
    summary = pd.DataFrame(
        {
            "lr": [0.1, 0.1, 0.01, 0.01],
            "depth": [1, 2, 1, 2],
            "val_error_mean": [0.30, 0.20, 0.10, 0.40],
            "val_error_std": [0.01, 0.01, 0.01, 0.20],
            "failed_folds": [0, 0, 0, 0],
        }
    )
    text = grid_effects_text(SelectionResult(pd.DataFrame(), summary, {"lr": 0.01, "depth": 1}, ["lr", "depth"])).data
    assert (
        "include 1 configuration whose folds disagree by more than three times that (unstable training: "
        "lr=0.01, depth=2)" in text
    )
    assert (
        "a spread of 10.00 points, more than fold noise, but 0.00 points without the unstable "
        "configurations named below, within fold noise" in text
    )  # depth's verdict hangs on lr=0.01, depth=2


def test_a_verdict_that_rests_on_unstable_configurations_says_so():
    summary = pd.DataFrame(
        {
            "lr": [0.1, 0.1, 0.01, 0.01],
            "depth": [1, 2, 1, 2],
            "val_error_mean": [0.20, 0.22, 0.21, 0.60],
            "val_error_std": [0.01, 0.01, 0.01, 0.30],
            "failed_folds": [0, 0, 0, 0],
        }
    )
    text = grid_effects_text(SelectionResult(pd.DataFrame(), summary, {"lr": 0.1, "depth": 1}, ["lr", "depth"])).data
    assert (
        "**lr**: best on average at 0.1 (21.00%), worst at 0.01 (40.50%), a spread of 19.50 points, more than "
        "fold noise, but 0.00 points without the unstable configurations named below, within fold noise"
    ) in text
    assert (
        "**depth**: best on average at 1 (20.50%), worst at 2 (41.00%), a spread of 20.50 points, more than "
        "fold noise." in text
    )


def test_table_escapes_latex_and_keeps_html_readable():
    t = Table(pd.DataFrame({"a_b": [0.5], "note": ["50% & more"]}), "Cap_tion", formats={"a_b": "{:.0%}"})
    latex = t._repr_latex_()
    assert r"50\%" in latex and r"\&" in latex and r"a\_b" in latex and r"Cap\_tion" in latex
    assert "<td>50%</td>" in t._repr_html_() and "&amp;" in t._repr_html_()


def _runs(*accuracies, parameters=1530):
    return [{"test_accuracy": a, "parameters": parameters} for a in accuracies]


def test_ablation_prose_is_computed_and_names_the_least_stable_row():
    results = {
        "with the bug": _runs(0.70, 0.75, 0.80),
        "fixed": _runs(0.89, 0.90, 0.91),
        "modern": _runs(0.91, 0.92, 0.91, parameters=2450),
    }
    text = ablation_conclusion(results, 0.73, table=7).data
    assert "75.00% ± 5.00% over 3 seeds (the course report claimed 73%)" in text
    assert "90.00% ± 1.00% (+15.00 points)" in text and "more than twice the seed spread" in text
    assert "widest spread over seeds is that of *with the bug*, a standard deviation of 5.00%" in text
    assert "(2,450 parameters against 1,530)" in text
    steady = {"with the bug": _runs(0.70, 0.70, 0.70), "fixed": _runs(0.80, 0.90, 0.85), "modern": _runs(0.9, 0.9, 0.9)}
    assert "widest spread over seeds is that of *fixed*" in ablation_conclusion(steady, 0.73, table=7).data


def _figure_notebook(pairs: int):
    """A notebook of text, figures and their captions, each figure at a different height on its page."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nbformat

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([0, 1], [1, 0])
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=50)
    plt.close(fig)
    png = base64.b64encode(png.getvalue()).decode()
    nb = nbformat.v4.new_notebook()
    for i in range(1, pairs + 1):
        words = " ".join(f"word{k}" for k in range(25 * i))  # a different amount of text before each figure
        nb.cells.append(nbformat.v4.new_markdown_cell(words))
        figure = nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})
        caption = (
            f"**Figure {i}.** " + " ".join(["A caption long enough to take three lines."] * 5) + f" Caption{i}ends."
        )
        # as in the notebooks: the figure ends one cell, its caption starts the next
        nb.cells.append(nbformat.v4.new_code_cell("plot()", outputs=[figure]))
        nb.cells.append(
            nbformat.v4.new_code_cell(
                "caption()", outputs=[nbformat.v4.new_output("display_data", data={"text/markdown": caption})]
            )
        )
    return nb


def test_latex_keeps_each_caption_in_one_block_with_its_figure():
    from nbconvert import LatexExporter

    from vitlib.render import pdf_settings

    nb = _figure_notebook(2)
    nb.cells.insert(1, nb.cells.pop(0))  # text between the first figure and its caption: left alone
    latex, _ = LatexExporter(**pdf_settings()).from_notebook_node(nb)
    latex = latex.split(r"\begin{document}")[1]  # the body
    blocks = latex.split(r"\begin{minipage}")[1:]
    assert len(blocks) == 1, "only the figure shown right before its caption is joined with it"
    block = blocks[0].split(r"\end{minipage}")[0]
    assert r"\adjustimage" in block and r"\textbf{Figure 2.}" in block and "Caption2ends." in block
    assert r"\textbf{Figure 1.}" in latex.split(r"\begin{minipage}")[0]  # still there, as text


@pytest.mark.slow
@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("xelatex", "pandoc", "pdftotext", "pdfimages")),
    reason="needs xelatex, pandoc and poppler-utils (make report says which packages)",
)
def test_pdf_never_breaks_a_page_between_a_figure_and_the_end_of_its_caption(tmp_path):
    import subprocess

    from nbconvert import PDFExporter

    from vitlib.render import pdf_settings

    pairs = 12
    pdf, _ = PDFExporter(**pdf_settings()).from_notebook_node(_figure_notebook(pairs))
    (tmp_path / "t.pdf").write_bytes(pdf)
    listing = subprocess.run(["pdfimages", "-list", str(tmp_path / "t.pdf")], capture_output=True, text=True)
    image_pages = [int(line.split()[0]) for line in listing.stdout.splitlines()[2:] if line.split()[2] == "image"]
    text = subprocess.run(["pdftotext", str(tmp_path / "t.pdf"), "-"], capture_output=True, text=True).stdout
    pages = text.split("\f")
    assert len(image_pages) == pairs and len(pages) > 3  # the figures fall at many places on many pages

    def page_of(needle):
        return next(n for n, page in enumerate(pages, start=1) if needle in page)

    for i, page in enumerate(image_pages, start=1):
        assert page_of(f"Figure {i}.") == page == page_of(f"Caption{i}ends."), f"figure {i} split from its caption"
