"""Building the report: execute the notebooks with papermill and a profile's parameters into
report/<profile>/, then render them with nbconvert into report.html and report.pdf (code hidden)
and one HTML per notebook (with code)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import load_yaml
from .study import NOTEBOOKS, from_parameters, project_root, results_dir

PDF_PACKAGES = "texlive-xetex texlive-fonts-recommended texlive-plain-generic pandoc"


def profile_parameters(profile: str, params_file: Path | None = None) -> dict:
    """The notebook parameters of a profile (params/<profile>.yaml), validated."""
    root = project_root()
    params_file = params_file or root / "params" / f"{profile}.yaml"
    if not params_file.is_file():
        known = sorted(p.stem for p in (root / "params").glob("*.yaml"))
        raise FileNotFoundError(f"no parameter profile {params_file}; profiles: {', '.join(known)}")
    params = {**load_yaml(params_file), "profile": profile}
    from_parameters(dict(params))  # fail before anything runs if a parameter is unknown or invalid
    return params


def execute(profile: str, params_file: Path | None = None, log_output: bool = True) -> list[Path]:
    """Run the notebooks with papermill and the profile's parameters into report/<profile>/."""
    import papermill as pm

    params = profile_parameters(profile, params_file)
    root = project_root()
    out = results_dir(profile)
    out.mkdir(parents=True, exist_ok=True)
    (out / "timing.json").unlink(missing_ok=True)
    executed = []
    for name in NOTEBOOKS:
        target = out / name
        pm.execute_notebook(str(root / "notebooks" / name), str(target), parameters=params,
                            cwd=str(root / "notebooks"), log_output=log_output, progress_bar=False)
        executed.append(target)
    return executed


def combine(notebooks: list[Path], title: str):
    """One notebook of the executed ones, without their parameter cells (code is hidden anyway)."""
    import nbformat

    parts = [nbformat.read(str(p), as_version=4) for p in notebooks]
    combined = nbformat.v4.new_notebook(metadata=parts[0].metadata)
    for nb in parts:
        combined.cells += [c for c in nb.cells
                           if not {"parameters", "injected-parameters"} & set(c.get("metadata", {}).get("tags", []))]
    combined.metadata["title"] = title
    combined.metadata["authors"] = [{"name": "vitlib"}]
    return combined


def render(profile: str, pdf: bool = True) -> dict:
    """report.html and report.pdf (code hidden) plus one HTML per notebook (with code)."""
    import nbformat
    from nbconvert import HTMLExporter, PDFExporter

    out = results_dir(profile)
    executed = [out / name for name in NOTEBOOKS]
    missing = [str(p) for p in executed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"executed notebooks missing: {', '.join(missing)}; run "
                                f"`python -m vitlib report --profile {profile}` without --render-only")
    title = f"Vision Transformers on MNIST — report ({profile} profile)"
    combined = combine(executed, title)
    nbformat.write(combined, str(out / "report.ipynb"))
    written = {}
    hidden = dict(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = HTMLExporter(**hidden).from_notebook_node(combined, resources={"metadata": {"name": title}})
    (out / "report.html").write_text(body)
    written["html"] = out / "report.html"
    for path in executed:
        body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(path), as_version=4),
                                                    resources={"metadata": {"name": path.stem}})
        path.with_suffix(".html").write_text(body)
    if pdf:
        missing_tools = [t for t in ("xelatex", "pandoc") if shutil.which(t) is None]
        if missing_tools:
            print(f"PDF skipped: {', '.join(missing_tools)} not found. For the PDF, install them, e.g. on "
                  f"Debian/Ubuntu: sudo apt-get install --no-install-recommends {PDF_PACKAGES}")
        else:
            exporter = PDFExporter(**hidden)
            data, _ = exporter.from_notebook_node(combined, resources={"metadata": {"name": title}})
            (out / "report.pdf").write_bytes(data)
            written["pdf"] = out / "report.pdf"
    return written
