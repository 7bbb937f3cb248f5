"""Rendering a build: the executed notebooks, in report order, into report.html and report.pdf
(code hidden, findings first, each figure kept with its caption on paper) and one HTML per
notebook (with code), with nbconvert.
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import jinja2
from bs4 import BeautifulSoup

from .build import profile_parameters


def report_order(notebooks: list[str]) -> list[str]:
    """The report reads its findings first; they are computed last, from everything before them."""
    return [notebooks[-1], *notebooks[:-1]]


PDF_PACKAGES = "texlive-xetex texlive-fonts-recommended texlive-plain-generic pandoc"


def combine(notebooks: list[Path], title: str):
    """One notebook of the executed ones in report order, without their parameter cells (code is
    hidden anyway); cells tagged `at-end` (the findings notebook's closing sections) go last."""
    import nbformat

    parts = [nbformat.read(str(p), as_version=4) for p in notebooks]
    combined = nbformat.v4.new_notebook(metadata=parts[0].metadata)
    body, end = [], []
    for nb in parts:
        for cell in nb.cells:
            tags = set(cell.get("metadata", {}).get("tags", []))
            if not {"parameters", "injected-parameters"} & tags:
                (end if "at-end" in tags else body).append(cell)
    combined.cells = body + end
    combined.metadata["title"] = title
    combined.metadata["authors"] = [{"name": "vitlib"}]
    return combined


FIGURE_CAPTION = "**Figure "  # how `report.caption` starts a figure's caption


def keep_captions_with_figures(nb):
    """For the PDF: set each figure and the caption displayed right after it (in the same cell or
    the next, with nothing between) as one float. Otherwise LaTeX may end a page between the two,
    or inside the caption; and a float, unlike a box in the text, lets the text go on filling the
    page when the figure does not fit, instead of leaving it half blank. Runs after nbconvert has
    extracted the images to files."""
    import nbformat
    from nbconvert.filters.pandoc import convert_pandoc

    figure = None  # the last output shown, while it is a figure
    for cell in nb.cells:
        if cell.cell_type != "code":
            figure = None
            continue
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            caption = data.get("text/markdown", "")
            if (
                figure is not None
                and caption.startswith(FIGURE_CAPTION)
                and set(data) <= {"text/markdown", "text/plain"}
            ):
                image = figure["metadata"]["filenames"]["image/png"]
                figure["data"] = {
                    "text/latex": "\n".join(
                        [
                            r"\begin{figure}[htbp]",
                            rf"{{\centering\adjustimage{{max size={{0.9\linewidth}}{{0.8\textheight}}}}{{{image}}}\par}}",
                            r"\vspace{4pt}",
                            convert_pandoc(caption, "markdown+tex_math_double_backslash", "latex").strip(),
                            r"\end{figure}",
                        ]
                    )
                }
                figure = None
                continue  # the caption now lives in the figure's block
            kept.append(output)
            shown = output.get("output_type") in ("display_data", "execute_result")
            figure = output if shown and "image/png" in data and "filenames" in output.get("metadata", {}) else None
        cell.outputs = kept
    latex = {"raw_mimetype": "text/latex"}
    barrier = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.lstrip().startswith("# ")]
    for i in reversed(barrier):  # a section starts after the figures and tables of the one before
        nb.cells.insert(i, nbformat.v4.new_raw_cell(r"\FloatBarrier", metadata=latex))
    nb.cells.insert(0, nbformat.v4.new_raw_cell(FLOAT_PLACEMENT, metadata=latex))
    return nb


# Let figures and tables take most of a page, and a page hold little text beside them, before LaTeX
# sends them to a page of their own.
FLOAT_PLACEMENT = (
    r"\renewcommand{\topfraction}{0.9}\renewcommand{\bottomfraction}{0.8}"
    r"\renewcommand{\textfraction}{0.07}\renewcommand{\floatpagefraction}{0.8}"
    r"\setcounter{topnumber}{3}\setcounter{bottomnumber}{3}\setcounter{totalnumber}{5}"
    # \FloatBarrier, as the placeins package defines it: set every figure and table still waiting
    r"\makeatletter\providecommand{\FloatBarrier}{\par\begingroup\let\@elt\relax"
    r"\edef\@tempa{\@botlist\@deferlist\@dbldeferlist}\def\@tempb{}"
    r"\ifx\@tempa\@tempb\else\clearpage\fi\endgroup}\makeatother"
)


CODE_HIDDEN = dict(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)  # report.{html,pdf}
# JupyterLab's page without the scripts it loads from CDNs (require.js, MathJax, Mermaid): the
# reports need none of them, and so read the same offline.
OFFLINE_PAGE = jinja2.DictLoader(
    {
        "offline.html.j2": "{%- extends 'lab/index.html.j2' -%}"
        "{%- block html_head_js -%}{%- endblock html_head_js -%}"
        "{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}"
        "{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}"
    }
)
HTML_SETTINGS = dict(extra_loaders=[OFFLINE_PAGE], template_file="offline.html.j2")
NO_ALT = "No description has been provided for this image"  # nbconvert's stand-in


def with_figure_alt_text(page: str) -> str:
    """Each figure's image described by its caption (nbconvert leaves a stand-in); an image
    without a caption of its own is said to be one."""
    soup = BeautifulSoup(page, "html.parser")
    for image in soup.find_all("img", alt=NO_ALT):
        caption = image.find_next(string=re.compile(r"^Figure \d+\.$"))
        if caption is not None and caption.find_previous("img") is image:
            image["alt"] = " ".join(caption.find_parent("p").get_text().split())
        else:
            image["alt"] = "A figure without a caption; the text around it says what it shows."
    return str(soup)


def pdf_settings() -> dict:
    """nbconvert's settings for report.pdf (its LaTeX exporter takes the same)."""
    return dict(
        **CODE_HIDDEN,
        raw_mimetypes=["text/latex"],  # its default would drop LaTeX raw cells
        preprocessors=[lambda nb, resources: (keep_captions_with_figures(nb), resources)],
    )


def render(profile: str, pdf: bool = True, params_file: Path | None = None) -> dict:
    """report.html and report.pdf (code hidden) plus one HTML per notebook (with code)."""
    import nbformat
    from nbconvert import HTMLExporter, PDFExporter

    study = profile_parameters(profile, params_file, quiet=True)[1]
    out = study.out
    executed = [out / name for name in report_order(study.notebooks)]
    missing = [str(p) for p in executed if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"executed notebooks missing: {', '.join(missing)}; run "
            f"`python -m vitlib report --profile {profile}` without --render-only"
        )
    title = f"{study.title} ({profile} profile)"
    (out / "report.pdf").unlink(missing_ok=True)  # a PDF of an earlier build must not pass for this one
    combined = combine(executed, title)
    nbformat.write(combined, str(out / "report.ipynb"))
    written = {}
    # The PDF's title comes from the metadata (\maketitle); the HTML page needs it as a heading.
    page = nbformat.from_dict(combined)
    page.cells = [
        nbformat.v4.new_markdown_cell(f"<h1>{html.escape(title)}</h1>", id="report-title")
    ] + page.cells  # a fixed id keeps the HTML the same from build to build
    body, _ = HTMLExporter(**CODE_HIDDEN, **HTML_SETTINGS).from_notebook_node(
        page, resources={"metadata": {"name": title}}
    )
    (out / "report.html").write_text(with_figure_alt_text(body))
    written["html"] = out / "report.html"
    for path in executed:
        body, _ = HTMLExporter(**HTML_SETTINGS).from_notebook_node(
            nbformat.read(str(path), as_version=4), resources={"metadata": {"name": path.stem}}
        )
        path.with_suffix(".html").write_text(with_figure_alt_text(body))
    if pdf:
        missing_tools = [t for t in ("xelatex", "pandoc") if shutil.which(t) is None]
        if missing_tools:
            print(
                f"PDF skipped: {', '.join(missing_tools)} not found. For the PDF, install them, e.g. on "
                f"Debian/Ubuntu: sudo apt-get install --no-install-recommends {PDF_PACKAGES}"
            )
        else:
            print("Rendering the PDF with XeLaTeX ...", flush=True)
            exporter = PDFExporter(**pdf_settings())
            data, _ = exporter.from_notebook_node(combined, resources={"metadata": {"name": title}})
            (out / "report.pdf").write_bytes(data)
            written["pdf"] = out / "report.pdf"
    return written
