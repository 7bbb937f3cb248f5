import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from vitlib.selection import SelectionResult
from vitlib.selection_report import grid_effects_text, main_effects
from vitlib.study_report import ablation_conclusion, runner_up_text
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
        "**depth**: best on average at 1 (20.00%), worst at 2 (30.00%), a spread of 10.00 points, beyond fold noise"
        in text
    )
    assert "So depth moves the average beyond fold noise" in text
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
    assert "1 configuration trained erratically, its folds disagreeing by more than 3 × that" in text
    assert "(lr=0.01, depth=2); the averages count it." in text
    assert "**depth**: best on average at 1 (20.00%), worst at 2 (30.00%), a spread of 10.00 points, beyond" in text
    assert "larger than 2 × the median standard deviation between the folds of one configuration (1.000 points)" in text


def test_one_rule_decides_beyond_fold_noise():
    """Twice the median fold standard deviation: 2 points here; 1.5 is within, 2.5 beyond, and an
    erratic configuration is named without a second verdict."""
    summary = pd.DataFrame(
        {
            "lr": [0.1, 0.1, 0.01, 0.01],
            "depth": [1, 2, 1, 2],
            "val_error_mean": [0.200, 0.225, 0.215, 0.240],
            "val_error_std": [0.01, 0.01, 0.01, 0.01],
            "failed_folds": [0, 0, 0, 0],
        }
    )
    text = grid_effects_text(SelectionResult(pd.DataFrame(), summary, {"lr": 0.1, "depth": 1}, ["lr", "depth"])).data
    assert "**lr**: best on average at 0.1 (21.25%), worst at 0.01 (22.75%), a spread of 1.50 points, within" in text
    assert "a spread of 2.50 points, beyond fold noise" in text and "So depth moves the average beyond" in text
    assert "erratically" not in text and " but " not in text


def test_table_escapes_latex_and_keeps_html_readable():
    t = Table(pd.DataFrame({"a_b": [0.5], "note": ["50% & more"]}), "Cap_tion", formats={"a_b": "{:.0%}"})
    latex = t._repr_latex_()
    assert r"50\%" in latex and r"\&" in latex and r"a\_b" in latex and r"Cap\_tion" in latex
    assert "<td>50%</td>" in t._repr_html_() and "&amp;" in t._repr_html_()


def _runs(*accuracies, parameters=1530):
    return [{"test_accuracy": a, "parameters": parameters} for a in accuracies]


def test_ablation_prose_reads_the_claim_against_every_seed():
    results = {
        "with the bug": _runs(0.70, 0.75, 0.80, 0.60, 0.85),
        "fixed": _runs(0.89, 0.90, 0.91),
        "modern": _runs(0.91, 0.92, 0.91, parameters=2450),
    }
    text = ablation_conclusion(results, 0.73, table=7, figure=7).data
    assert "reaches 74.00% ± 9.62% over 5 seeds, from 60.00% to 85.00%" in text
    assert "lies inside that range (2 of 5 seeds score lower): an ordinary draw of the double softmax" in text
    assert "90.00% ± 1.00% over 3 seeds (+16.00 points on average), and every seed scores above every seed" in text
    assert "(2,450 parameters against 1,530)" in text
    assert "standard deviation over seeds is 9.62%, against 1.00% without it" in text
    overlapping = {**results, "fixed": _runs(0.70, 0.90, 0.95)}
    text = ablation_conclusion(overlapping, 0.95, table=7, figure=7).data
    assert "the two rows' seeds overlap" in text and "lies above every seed here" in text


def test_the_runner_up_is_judged_over_seeds_not_one_pair_of_runs():
    correct = np.ones(1000, bool)
    other = correct.copy()
    other[:60] = False  # the runner-up gets 60 more wrong than seed 0: McNemar says these two runs differ
    runs = {
        "seed 0 (the final model above)": {"test_accuracy": 0.95, "test_correct": correct},
        "seed 1": {"test_accuracy": 0.88},
        "seed 2": {"test_accuracy": 0.87},
        "runner-up": {"test_accuracy": 0.89, "test_correct": other},
    }
    selection = SimpleNamespace(runner_up=lambda: {"depth": 2})
    text = runner_up_text(runs, selection)
    assert (
        f"p = {2 * 0.5**60:.2g}" in text
        and "2 of the selected configuration's 3 seeds score below the runner-up" in text
    )
    runs["seed 1"]["test_accuracy"] = runs["seed 2"]["test_accuracy"] = 0.94
    assert "these two runs differ at the 5% level, and all 3 seeds" in runner_up_text(runs, selection)


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
    blocks = latex.split(r"\begin{figure}")[1:]
    assert len(blocks) == 1, "only the figure shown right before its caption is joined with it"
    block = blocks[0].split(r"\end{figure}")[0]
    assert r"\adjustimage" in block and r"\textbf{Figure 2.}" in block and "Caption2ends." in block
    assert r"\textbf{Figure 1.}" in latex.split(r"\begin{figure}")[0]  # still there, as text


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
