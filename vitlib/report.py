"""The report: notebook parameters -> a validated run, tables and prose built from results, and
executing (papermill) and rendering (nbconvert) the notebooks into report/<profile>/.

Notebooks stay thin: each section is one call into this module or `plots`.
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown

from .config import FIELD_SECTION, ExperimentConfig, _reject_unknown, build_config
from .data import MNIST
from .experiment import load_data, run_info, train_and_test, train_variants
from .selection import SELECTION_RULE, SelectionResult, select
from .stats import mcnemar, mean_std, wilson_interval
from .train import load_checkpoint, predict

NOTEBOOKS = ["01_model_selection.ipynb", "02_final_evaluation.ipynb", "03_understanding.ipynb"]
# The reproduction and ablation: name -> preset (vitlib.config.PRESETS).
ABLATION = {"original (head softmax, as in the report)": "original",
            "original without the head softmax": "seed",
            "same size, modern recipe": "modern"}
NOTEBOOK_NAMES = {"profile", "preset"}  # notebook parameters that are not experiment settings
PDF_PACKAGES = "texlive-xetex texlive-fonts-recommended texlive-plain-generic pandoc"
_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


def project_root() -> Path:
    """The checkout holding notebooks/ and pyproject.toml (from the notebook's folder or above)."""
    for folder in [Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[1]]:
        if (folder / "notebooks").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return Path.cwd()


def results_dir(profile: str) -> Path:
    """report/<profile>/, or <$VITLIB_REPORT_DIR>/<profile>/ when that is set (tests use it)."""
    return Path(os.environ.get("VITLIB_REPORT_DIR") or project_root() / "report") / profile


# ---------------------------------------------------------------------------------------------
# A notebook's run: parameters in, results out


@dataclass
class NotebookRun:
    profile: str
    preset: str
    config: ExperimentConfig
    overrides: dict
    started: float = field(default_factory=time.perf_counter)

    @property
    def out(self) -> Path:
        return results_dir(self.profile)

    def load_data(self) -> MNIST:
        return load_data(self.config)

    def select(self, data: MNIST) -> SelectionResult:
        """k-fold selection, its trials kept in report/<profile>/selection/ (a rerun resumes)."""
        result = select(self.config, data, self.out / "selection", progress=True, log=_print_flush)
        self._save_timing("selection_seconds", trials=len(result.trials), trials_reused=result.reused)
        return result

    def selection_result(self, data: MNIST) -> SelectionResult:
        """The finished model selection, read back (every trial is on disk after notebook 01)."""
        self.best_overrides()  # a clear error if notebook 01 has not run
        return select(self.config, data, self.out / "selection", progress=False, log=lambda *a: None)

    def final_model(self):
        """The final model of notebook 02, from its checkpoint."""
        path = self.out / "final" / "checkpoint.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: run notebooks/{NOTEBOOKS[1]} with profile "
                                    f"{self.profile!r} first (`make report PROFILE={self.profile}` runs all).")
        return load_checkpoint(path)[0]

    def best_overrides(self) -> dict:
        path = self.out / "selection" / "best.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: run notebooks/{NOTEBOOKS[0]} with profile "
                                    f"{self.profile!r} first (`make report PROFILE={self.profile}` runs both).")
        return json.loads(path.read_text())["best"]

    def train_final(self, data: MNIST) -> tuple[torch.nn.Module, dict, ExperimentConfig]:
        """The selected config trained on all training images, tested after every epoch."""
        cfg = self.config.with_overrides(self.best_overrides())
        model, metrics = train_and_test(cfg, data, self.out / "final", progress=False, log=_print_flush)
        correct = (predict(model, data.test_images).argmax(1) == data.test_labels).numpy()
        np.save(self.out / "final" / "test_correct.npy", correct)  # for the paired test against the runner-up
        self._save_timing("final_seconds")
        return model, metrics, cfg

    # Settings that say how much data and how long, and how a run is executed: these carry over
    # from the profile to the extra runs below; everything else comes from each run's own preset.
    CARRY_OVER = ("epochs", "train_limit", "test_limit", "seed", "device", "compile", "data_root")

    def seeds_and_runner_up(self, data: MNIST, selection: SelectionResult, n_seeds: int = 3) -> dict:
        """The selected config with more seeds, and the runner-up, each on all training images."""
        final = self.config.with_overrides(self.best_overrides())
        base_seed = final.train.seed
        variants = {f"seed {base_seed + i}": final.with_overrides(seed=base_seed + i) for i in range(1, n_seeds)}
        runner_up = _runner_up(selection)
        if runner_up is not None:
            variants["runner-up"] = self.config.with_overrides(runner_up)
        sel = self.config.selection
        first = json.loads((self.out / "final" / "metrics.json").read_text())
        first["test_correct"] = np.load(self.out / "final" / "test_correct.npy")
        others = train_variants(variants, data, self.out / "final_variants", sel.n_jobs, sel.joblib_backend,
                                log=_print_flush)
        return {f"seed {base_seed} (the final model above)": first, **others}

    def ablation(self, data: MNIST) -> tuple[dict, dict]:
        """The original model with and without its head softmax, and with a modern recipe, at the
        original's chosen size (3 blocks, 16 MLP units) and with this profile's data and epochs."""
        carried = {k: v for k, v in self.config.flat().items() if k in self.CARRY_OVER}
        variants = {name: build_config(preset, carried) for name, preset in ABLATION.items()}
        sel = self.config.selection
        results = train_variants(variants, data, self.out / "ablation", sel.n_jobs, sel.joblib_backend,
                                 log=_print_flush)
        return results, variants

    def _save_timing(self, key: str, **extra) -> None:
        path = self.out / "timing.json"
        timing = json.loads(path.read_text()) if path.is_file() else {}
        timing.update({key: time.perf_counter() - self.started, **extra})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(timing, indent=2))

    def timing(self) -> dict:
        path = self.out / "timing.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def notebook_run(namespace: dict) -> NotebookRun:
    """Validate a notebook's parameters (its globals after papermill's injection) into a run.

    papermill only warns about parameters a notebook does not declare; here any variable that is
    neither a notebook parameter nor an experiment setting stops the notebook at once.
    """
    params = {k: v for k, v in namespace.items()
              if not k.startswith("_") and k not in _IPYTHON_NAMES and not callable(v)
              and type(v).__name__ != "module"}
    _reject_unknown(params, NOTEBOOK_NAMES | set(FIELD_SECTION), "notebook parameter")
    profile, preset = params.pop("profile", "seed"), params.pop("preset", "seed")
    if not isinstance(profile, str) or not profile.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"profile must be a simple name (letters, digits, - or _), got {profile!r}")
    overrides = {k: v for k, v in params.items() if v is not None}
    config = build_config(preset, overrides)
    root = Path(config.data.data_root)
    if not root.is_absolute():  # relative to the project, wherever the notebook runs from
        config = config.with_overrides(data_root=str(project_root() / root))
    return NotebookRun(profile, preset, config, overrides)


def _print_flush(*args):
    print(*args, flush=True)


# ---------------------------------------------------------------------------------------------
# Tables that read well in HTML and in the PDF


class Table:
    """A DataFrame with an HTML and a LaTeX rendering (nbconvert's PDF route uses the LaTeX)."""

    def __init__(self, df: pd.DataFrame, caption: str = "", formats: dict | None = None, digits: int = 4,
                 widths: dict | None = None):
        self.df, self.caption = df, caption
        # LaTeX column widths for long text ({column: "3cm"}); other columns size themselves.
        self.columns = "".join(f"p{{{(widths or {})[c]}}}" if c in (widths or {}) else "l" for c in df.columns)
        formats = formats or {}
        self.text = pd.DataFrame({c: [_format(v, formats.get(c), digits) for v in df[c]] for c in df.columns})

    def _repr_html_(self) -> str:
        caption = f"<p><b>{html.escape(self.caption)}</b></p>" if self.caption else ""
        return caption + self.text.to_html(index=False, escape=True, border=0, classes="dataframe")

    def _repr_latex_(self) -> str:
        def row(cells):
            return " & ".join(_latex_escape(str(c)) for c in cells) + r" \\"

        columns = self.columns
        caption = rf"\textbf{{{_latex_escape(self.caption)}}}" if self.caption else ""
        body = [r"\toprule", row(self.text.columns), r"\midrule",
                *(row(r) for r in self.text.itertuples(index=False)), r"\bottomrule"]
        if len(self.text) > 35:  # too long for one page: let it break across pages
            head = [rf"\begin{{longtable}}{{{columns}}}"] + ([caption + r" \\\\"] if caption else [])
            return "\n".join([r"{\small"] + head + body + [r"\end{longtable}}"])
        # short tables stay in one piece, caption included
        return "\n".join([r"\begin{center}\begin{minipage}{\linewidth}\centering", caption + r"\\[4pt]",
                          r"{\small\setlength{\tabcolsep}{4pt}", rf"\begin{{tabular}}{{{columns}}}", *body,
                          r"\end{tabular}}",
                          r"\end{minipage}\end{center}"])

    def __repr__(self) -> str:
        return (self.caption + "\n" if self.caption else "") + self.text.to_string(index=False)


def _format(value, fmt: str | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if fmt:
        return fmt.format(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _latex_escape(text: str) -> str:
    out = []
    for ch in text:
        out.append({"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                    "±": r"$\pm$", "→": r"$\rightarrow$"}.get(ch, ch))
    return "".join(out)


def settings_table(run: NotebookRun) -> Table:
    """What was run: the profile, its preset, and every setting that differs from the preset."""
    preset_cfg = build_config(run.preset)
    ours, base = run.config.flat(), preset_cfg.flat()
    rows = [("profile", run.profile, ""), ("preset", run.preset, "")]
    shown = ["patch_size", "embed_dim", "num_heads", "depth", "mlp_hidden_dim", "head_softmax", "optimizer",
             "lr", "batch_size", "epochs", "lr_schedule", "folds", "shuffle_folds", "grid", "seed",
             "train_limit", "test_limit"]
    for key in shown + [k for k in ours if k not in shown and ours[k] != base[k] and k != "data_root"]:
        rows.append((key, _short(ours[key]), "changed by the profile" if ours[key] != base[key] else ""))
    return Table(pd.DataFrame(rows, columns=["setting", "value", "note"]), "Settings of this run")


def environment_table(run: NotebookRun) -> Table:
    info = run_info()
    timing = run.timing()
    rows = [(k, str(v)) for k, v in info.items()]
    if "selection_seconds" in timing:
        reused = timing.get("trials_reused", 0)
        note = f" ({reused} of {timing['trials']} trials reused from an earlier run)" if reused else ""
        rows.append(("model selection wall time", f"{timing['selection_seconds']:.0f} s{note}"))
    if "final_seconds" in timing:
        rows.append(("final training wall time", f"{timing['final_seconds']:.0f} s"))
    return Table(pd.DataFrame(rows, columns=["item", "value"]), "Where and with what it ran")


def _short(value) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= 70 else text[:67] + "..."


def data_table(data: MNIST, config: ExperimentConfig) -> Table:
    rows = [("training images", len(data.train_images)), ("test images", len(data.test_images)),
            ("folds for model selection", config.selection.folds),
            ("training images per fold (train / validation)",
             f"{len(data.train_images) - len(data.train_images) // config.selection.folds} / "
             f"{len(data.train_images) // config.selection.folds}")]
    return Table(pd.DataFrame(rows, columns=["", "value"]).astype(str), "Data")


def selection_table(result: SelectionResult) -> Table:
    """Mean ± std over folds per config, best first marked."""
    s = result.summary
    df = s[result.grid_keys].copy()
    for metric in ("train_loss", "train_error", "val_loss", "val_error"):
        df[metric.replace("_", " ")] = [_pm(m, sd) for m, sd in zip(s[f"{metric}_mean"], s[f"{metric}_std"])]
    df["s/trial"] = s["seconds_mean"].round(1)
    if s["failed_folds"].any():
        df["failed folds"] = s["failed_folds"]
    df["chosen"] = ["yes" if all(r[k] == v for k, v in result.best.items()) else "" for _, r in s.iterrows()]
    return Table(df, f"Model selection: mean ± std over {int(s['folds'].max())} folds "
                     f"(error = misclassification rate, loss = cross-entropy)", digits=1)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _pm(mean: float, std: float) -> str:
    if isinstance(mean, float) and math.isnan(mean):
        return "failed"
    return f"{mean:.4f} ± {0.0 if math.isnan(std) else std:.4f}"


def trials_table(result: SelectionResult) -> Table:
    cols = result.grid_keys + ["fold", "train_loss", "train_error", "val_loss", "val_error", "seconds", "status"]
    return Table(result.trials[cols], "Every trial (one row per config and fold)", digits=4)


def selection_conclusion(result: SelectionResult) -> Markdown:
    s = result.summary[result.summary["failed_folds"] == 0].sort_values("val_error_mean", kind="stable")
    rows = s.to_dict("records")  # keeps each column's type: depth stays an int
    best, rest = rows[0], rows[1:]
    name = ", ".join(f"{k} = {best[k]}" for k in result.grid_keys)
    text = (f"**Selected: {name}**, with a mean validation error of {best['val_error_mean']:.4f} "
            f"(± {best['val_error_std']:.4f} over folds). Rule: {SELECTION_RULE}.")
    if rest:
        second = rest[0]
        gap = second["val_error_mean"] - best["val_error_mean"]
        spread = max(best["val_error_std"], second["val_error_std"])
        runner = ", ".join(f"{k} = {second[k]}" for k in result.grid_keys)
        verdict = ("smaller than the spread between folds, so this choice is within noise"
                   if gap < spread else "larger than the spread between folds")
        text += (f" The runner-up ({runner}) is {gap:.4f} behind; that gap is {verdict} "
                 f"(largest fold standard deviation of the two: {spread:.4f}).")
    failed = result.summary[result.summary["failed_folds"] > 0]
    if len(failed):
        text += f" {len(failed)} config(s) diverged in at least one fold and were not eligible."
    return Markdown(text)


def final_table(metrics: dict) -> Table:
    rows = [("training (running, last epoch)", metrics["train_loss"], metrics["train_error"],
             1 - metrics["train_error"]),
            ("test", metrics["test_loss"], metrics["test_error"], metrics["test_accuracy"])]
    df = pd.DataFrame(rows, columns=["set", "proxy loss", "misclassification error", "accuracy"])
    return Table(df, f"Final model after {_plural(len(metrics['history']), 'epoch')}", formats={"accuracy": "{:.2%}"})


def final_conclusion(metrics: dict, cfg: ExperimentConfig, best: dict) -> Markdown:
    n = metrics["n_test"]
    wrong = round(metrics["test_error"] * n)
    name = ", ".join(f"{k} = {v}" for k, v in best.items())
    return Markdown(
        f"The selected model ({name}; {metrics['parameters']:,} parameters) reaches a **test accuracy of "
        f"{metrics['test_accuracy']:.2%}** ({wrong} of {n:,} test digits wrong) after {_plural(cfg.train.epochs, 'epoch')} "
        f"of training on {metrics['n_train']:,} images, which took {metrics['train_seconds']:.0f} s on "
        f"{metrics['run']['device']} ({metrics['run']['device_name']})."
    )


def prediction_captions(model, images: torch.Tensor, labels: torch.Tensor) -> list[str]:
    probs = predict(model, images)
    return [f"{int(y)} → {int(p.argmax())} ({float(p.max()):.2f})" for y, p in zip(labels, probs)]


def misclassified(model, data: MNIST, limit: int = 24) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """The test digits the model gets wrong, most confident first, with 'true → predicted (p)' captions,
    and all test predictions."""
    probs = predict(model, data.test_images)
    pred = probs.argmax(1)
    wrong = (pred != data.test_labels).nonzero().flatten()
    order = wrong[probs[wrong, pred[wrong]].argsort(descending=True)][:limit]
    captions = [f"{int(data.test_labels[i])} → {int(pred[i])} ({float(probs[i, pred[i]]):.2f})" for i in order]
    return data.test_images[order], captions, pred


# ---------------------------------------------------------------------------------------------
# Executing and rendering


def execute(profile: str, params_file: Path | None = None, log_output: bool = True) -> list[Path]:
    """Run the notebooks with papermill and the profile's parameters into report/<profile>/."""
    import papermill as pm
    import yaml

    root = project_root()
    params_file = params_file or root / "params" / f"{profile}.yaml"
    if not params_file.is_file():
        known = sorted(p.stem for p in (root / "params").glob("*.yaml"))
        raise FileNotFoundError(f"no parameter profile {params_file}; profiles: {', '.join(known)}")
    params = yaml.safe_load(params_file.read_text()) or {}
    params["profile"] = profile
    notebook_run(dict(params))  # fail before anything runs if a parameter is unknown or invalid
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


# ---------------------------------------------------------------------------------------------
# Statistics and the ablation


def _runner_up(selection: SelectionResult) -> dict | None:
    ok = selection.summary[selection.summary["failed_folds"] == 0].sort_values("val_error_mean", kind="stable")
    rows = ok[selection.grid_keys].to_dict("records")
    return rows[1] if len(rows) > 1 else None


def _interval_text(metrics: dict) -> str:
    lo, hi = wilson_interval(round(metrics["test_accuracy"] * metrics["n_test"]), metrics["n_test"])
    return f"{lo * 100:.2f}–{hi * 100:.2f}%"


def seeds_table(runs: dict) -> Table:
    rows = [(name, m["test_accuracy"], _interval_text(m), m["test_loss"], m["train_seconds"])
            for name, m in runs.items() if name != "runner-up"]
    df = pd.DataFrame(rows, columns=["run", "test accuracy", "95% CI (Wilson)", "test proxy loss", "train s"])
    return Table(df, "The selected config, trained with different seeds",
                 formats={"test accuracy": "{:.2%}", "train s": "{:.0f}"})


def statistics_conclusion(runs: dict, selection: SelectionResult) -> Markdown:
    seeds = [m["test_accuracy"] for name, m in runs.items() if name != "runner-up"]
    mean, std = mean_std(seeds)
    first = next(iter(runs.values()))
    lo, hi = wilson_interval(round(first["test_accuracy"] * first["n_test"]), first["n_test"])
    text = (f"Over {len(seeds)} seeds the selected config reaches **{mean:.2%} ± {std:.2%}** test accuracy "
            f"(mean ± standard deviation). For one run, the 95% Wilson interval of its test accuracy is "
            f"{lo:.2%} – {hi:.2%} ({hi - lo:.2%} wide): differences between seeds "
            f"{'are larger than' if std * 2 > hi - lo else 'fit within'} what the test set alone can resolve.")
    if "runner-up" in runs:
        runner = _runner_up(selection)
        test = mcnemar(first["test_correct"], runs["runner-up"]["test_correct"])
        name = ", ".join(f"{k} = {v}" for k, v in runner.items())
        verdict = ("a significant difference at the 5% level" if test["p_value"] < 0.05
                   else "no significant difference at the 5% level: the choice between them is within noise")
        text += (f"\n\nAgainst the runner-up of model selection ({name}; test accuracy "
                 f"{runs['runner-up']['test_accuracy']:.2%}, same seed), the exact McNemar test on the "
                 f"{test['discordant']} test images that exactly one of the two gets right "
                 f"({test['a_only_right']} only the selected, {test['b_only_right']} only the runner-up) gives "
                 f"p = {test['p_value']:.3g}: {verdict}.")
    return Markdown(text)


def ablation_table(results: dict, variants: dict) -> Table:
    rows = []
    for name, m in results.items():
        c = variants[name]
        recipe = (f"{c.train.optimizer}, lr {c.train.lr}, {c.train.lr_schedule}"
                  + (f" + {c.train.warmup_epochs:g} warmup epoch(s)" if c.train.warmup_epochs else "")
                  + (", wd " + f"{c.train.weight_decay:g}" if c.train.weight_decay else ""))
        model = ("per-head qkv, no out proj" if c.model.qkv_per_head else "fused qkv + out proj") + \
                (", sinusoidal pos" if c.model.pos_embed == "sinusoidal" else f", {c.model.pos_embed} pos") + \
                (", final LN" if c.model.final_norm else "") + (", input norm" if c.model.normalize_input else "") + \
                (", head softmax" if c.model.head_softmax else "")
        rows.append((name, f"{model}; {m['parameters']:,} parameters", recipe, m["test_accuracy"], _interval_text(m)))
    df = pd.DataFrame(rows, columns=["run", "model", "training", "test accuracy", "95% CI"])
    any_cfg = next(iter(variants.values()))
    return Table(df, f"Reproduction and ablation: depth {any_cfg.model.depth}, MLP {any_cfg.model.mlp_hidden_dim}, "
                     f"embed {any_cfg.model.embed_dim}, batch {any_cfg.train.batch_size}, "
                     f"{_plural(any_cfg.train.epochs, 'epoch')}, seed {any_cfg.train.seed}",
                 formats={"test accuracy": "{:.2%}"},
                 widths={"run": "3cm", "model": "4.4cm", "training": "3.4cm"})


def ablation_conclusion(results: dict) -> Markdown:
    acc = {name: m["test_accuracy"] for name, m in results.items()}
    names = list(acc)
    first = next(iter(results.values()))
    lo, hi = wilson_interval(round(first["test_accuracy"] * first["n_test"]), first["n_test"])
    gain = acc[names[1]] - acc[names[0]]
    text = (f"With the head softmax, as the report trained it, the model reaches {acc[names[0]]:.2%} (the report "
            f"gave 73%); without it, the same model and protocol reach {acc[names[1]]:.2%} ({gain * 100:+.2f} points). At the "
            f"same tiny size, a modern recipe reaches {acc[names[2]]:.2%}. ")
    if gain > hi - lo:
        text += ("Removing the double softmax moves the accuracy by more than the width of a 95% confidence "
                 "interval on this test set, so most of the report's shortfall came from that bug. The run with "
                 "the double softmax is also the least stable: its gradients are squashed through two softmaxes, "
                 "and changes as small as float rounding (another kernel, `torch.compile` on or off) or the seed "
                 "move its accuracy by several points, so its single number is a rough one.")
    else:
        text += "On this run the double softmax's effect is within the test set's 95% confidence interval."
    return Markdown(text)


def grid_effects(selection: SelectionResult) -> Table | None:
    """Mean validation error for each value of each grid setting, averaged over the rest of the
    grid (a main-effects view; meaningful for full factorial grids such as the profiles')."""
    ok = selection.summary[selection.summary["failed_folds"] == 0]
    rows = []
    for key in selection.grid_keys:
        means = ok.groupby(key, sort=False)["val_error_mean"].agg(["mean", "min", "count"])
        for value, r in means.iterrows():
            rows.append((key, str(value), r["mean"], r["min"], int(r["count"])))
    if not rows:
        return None
    df = pd.DataFrame(rows, columns=["setting", "value", "mean val error", "best val error", "configs"])
    return Table(df, "Each setting's effect: validation error averaged over the rest of the grid")


def grid_effects_text(selection: SelectionResult) -> Markdown:
    ok = selection.summary[selection.summary["failed_folds"] == 0]
    parts = []
    for key in selection.grid_keys:
        means = ok.groupby(key, sort=False)["val_error_mean"].mean()
        if len(means) < 2:
            continue
        best, worst = means.idxmin(), means.idxmax()
        if means[worst] - means[best] < 1e-12:
            parts.append(f"**{key}**: the same on average for all its values ({means[best]:.4f})")
            continue
        parts.append(f"**{key}**: best on average at {best} ({means[best]:.4f}), worst at {worst} "
                     f"({means[worst]:.4f}), a spread of {means[worst] - means[best]:.4f}")
    noise = ok["val_error_std"].median()
    text = "; ".join(parts) + "." if parts else "The grid has a single value per setting."
    return Markdown(text + f" For scale, the median standard deviation between folds of one config is {noise:.4f}: "
                           "a spread smaller than that is within noise.")
