"""Tables that read well in the notebook, in the HTML report and in the PDF (nbconvert's LaTeX
route uses `_repr_latex_`, the HTML route `_repr_html_`)."""

from __future__ import annotations

import html
import math

import pandas as pd


class Table:
    """A DataFrame shown as text cells formatted once, with a caption."""

    def __init__(
        self,
        df: pd.DataFrame,
        caption: str = "",
        formats: dict | None = None,
        digits: int = 4,
        widths: dict | None = None,
    ):
        self.df, self.caption = df, caption
        # LaTeX column widths for long text ({column: "3cm"}); other columns size themselves.
        self.columns = "".join(
            rf">{{\raggedright\arraybackslash}}p{{{(widths or {})[c]}}}" if c in (widths or {}) else "l"
            for c in df.columns
        )  # ragged right: justified narrow cells gape
        formats = formats or {}
        self.text = pd.DataFrame({c: [format_value(v, formats.get(c), digits) for v in df[c]] for c in df.columns})

    def _repr_html_(self) -> str:
        caption = f"<p><b>{html.escape(self.caption)}</b></p>" if self.caption else ""
        return caption + self.text.to_html(index=False, escape=True, border=0, classes="dataframe")

    def _repr_latex_(self) -> str:
        def row(cells):
            return " & ".join(latex_escape(str(c)) for c in cells) + r" \\"

        columns = self.columns
        caption = rf"\textbf{{{latex_escape(self.caption)}}}" if self.caption else ""
        body = [
            r"\toprule",
            row(self.text.columns),
            r"\midrule",
            *(row(r) for r in self.text.itertuples(index=False)),
            r"\bottomrule",
        ]
        if len(self.text) > 60:  # too long for one page: let it break across pages
            head = [rf"\begin{{longtable}}{{{columns}}}"] + ([caption + r" \\\\"] if caption else [])
            return "\n".join([r"{\small"] + head + body + [r"\end{longtable}}"])
        # short tables stay in one piece, caption included, as a float (the text fills the page if it does not fit)
        return "\n".join(
            [
                r"\begin{table}[htbp]\centering",
                caption + r"\\[4pt]",
                r"{\small\setlength{\tabcolsep}{4pt}",
                r"\begin{adjustbox}{max width=\linewidth}",  # a wide table shrinks to the text width
                rf"\begin{{tabular}}{{{columns}}}",
                *body,
                r"\end{tabular}",
                r"\end{adjustbox}}",
                r"\end{table}",
            ]
        )

    def __repr__(self) -> str:
        return (self.caption + "\n" if self.caption else "") + self.text.to_string(index=False)


def format_value(value, fmt: str | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if fmt:
        return fmt.format(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def latex_escape(text: str) -> str:
    out = []
    for ch in text:
        out.append(
            {
                "\\": r"\textbackslash{}",
                "&": r"\&",
                "%": r"\%",
                "$": r"\$",
                "#": r"\#",
                "_": r"\_",
                "{": r"\{",
                "}": r"\}",
                "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}",
                "±": r"$\pm$",
                "→": r"$\rightarrow$",
            }.get(ch, ch)
        )
    return "".join(out)
