"""`workbench report`: a study's bubble chart (PNG and SVG) and its table in Markdown, fit for a paper.

Everything is rendered in memory first and written only when all of it succeeded, each file through a
temporary name and a rename, so a failure (bad store, unknown study, full disk) leaves nothing half-written.
"""

from __future__ import annotations

from pathlib import Path

from workbench.dashboard.chart_data import X_AXES, ChartData, default_x, front, plotted
from workbench.dashboard.figure import ablation_figure, bubble_figure, figure_bytes
from workbench.dashboard.readonly import ReadOnlyStore, read_chart_data
from workbench.fileio import check_name, write_all
from workbench.study.results import StudyTable, build_table
from workbench.study.tables import render_markdown


def study_run(url: str | None, study: str, dataset: str | None, schedule: str | None) -> tuple[StudyTable, ChartData]:
    """The study's table for one run (as `workbench results` chooses it) and the chart data of that run."""
    table = build_table(ReadOnlyStore(url), study, dataset, schedule)
    return table, read_chart_data(url, [study]).select(runs=[table.config["id"]])


def report_markdown(table: StudyTable, data: ChartData, x: str, figure_name: str,
                    ablation_name: str | None = None) -> str:
    best = front(data.points, x)
    unit = "M params" if x == "params" else "M MACs"
    lines = [f"# Study {table.study}", "", f"![{table.study}: top-1 against {X_AXES[x]}]({figure_name})", "",
             f"*Top-1 against {X_AXES[x]}; bubble area proportional to "
             f"{'fvcore' if x == 'macs_fvcore' else 'paper'} MACs; whiskers: 95% interval over seeds; stars: "
             "the paper's published top-1 (its dataset and schedule); dashed: the Pareto front of the measured "
             "points.*", "", render_markdown(table).rstrip(), ""]
    if ablation_name:
        lines += [f"![{table.study}: deltas against {table.baseline}]({ablation_name})", "",
                  f"*Each variant's top-1 delta against {table.baseline} with its 95% interval (seed spread and the "
                  "test set's noise), the paper's delta (star) on the same axis.*", ""]
    if len(best):
        lines += ["Pareto front (fewer " + ("params" if x == "params" else "MACs") + ", higher top-1): "
                  + ", ".join(f"{r['variant']} ({r[x]:.2f}{unit}, {r['top1']:.2f}%)" for _, r in best.iterrows()), ""]
    missing = len(data.points) - len(plotted(data.points, x))
    if missing:
        lines += [f"{missing} variant(s) have no completed trial yet and are not in the figure.", ""]
    return "\n".join(lines)


def build_report(url: str | None, study: str, dataset: str | None = None, schedule: str | None = None,
                 x: str | None = None, colour_by: str = "variant") -> dict[str, bytes]:
    """File name -> content, all rendered, nothing written. `dataset` as typed: a relative path matches the run
    the store recorded with it made absolute."""
    from workbench.training.data import normalize_dataset

    check_name(study, "study name")  # it names every file the report writes
    dataset = normalize_dataset(dataset, must_exist=False) if dataset else None
    table, data = study_run(url, study, dataset, schedule)
    x = x or default_x(data.points)  # paper MACs, or fvcore's when another family's model has none
    config = table.config
    title = f"{study}: {config['dataset']} / {config['schedule']}"
    fig = bubble_figure(data.points, data.published, x, colour_by, title)
    figure_name = f"{study}_pareto.svg"
    ablation = ablation_figure(table)
    ablation_name = f"{study}_ablation.svg"
    return {f"{study}_pareto.png": figure_bytes(fig, "png"), figure_name: figure_bytes(fig, "svg"),
            f"{study}_ablation.png": figure_bytes(ablation, "png"), ablation_name: figure_bytes(ablation, "svg"),
            f"{study}_report.md": report_markdown(table, data, x, figure_name, ablation_name).encode(),
            f"{study}_points.csv": data.points.drop(columns=["run"]).to_csv(index=False).encode()}


def write_files(files: dict[str, bytes], out: Path) -> list[Path]:
    """All files or none (fileio.write_all): a report is never half old, half new."""
    return write_all(out, files)
