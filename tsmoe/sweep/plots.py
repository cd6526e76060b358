"""A sweep's plots: the Pareto front (PNG and HTML), parallel coordinates and parameter importance.

The HTML pages share one plotly.min.js written beside them (not fetched from a CDN), so they open without
a network: sweeps run on clusters that often have none. The importances themselves come from
`importance.py`; this module only draws them. A plot that the table cannot support (no completed trial,
nothing that varies) is skipped, never an error: the plots are a by-product of a sweep and must not fail it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from optuna.distributions import BaseDistribution
from plotly.subplots import make_subplots

from tsmoe.sweep.importance import Direction, parameter_importances
from tsmoe.sweep.pareto import (
    COMPLETED,
    INFEASIBLE_REASON,
    PARAM_PREFIX,
    QUALITY,
    STATUS,
    STOP_REASON,
    STOPPED,
    TRIAL_ID,
    format_figure,
    is_feasible,
    objective_values,
    parameter_columns,
    pareto_front,
)

SHORT_ID_LENGTH = 12

# Groups are drawn from the least to the most important, so that the front sits on top.
_DRAW_ORDER = ("unfinished", "stopped", "infeasible", "completed", "front")
# How each group of trials is drawn: (legend label, matplotlib style, plotly marker).
_GROUPS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "front": (
        "Pareto front",
        dict(color="tab:red", marker="o", s=48, zorder=4),
        dict(color="crimson", size=10),
    ),
    "completed": (
        "completed",
        dict(color="tab:blue", marker="o", s=30, zorder=3),
        dict(color="royalblue", size=8),
    ),
    "infeasible": (
        "completed, infeasible",
        dict(facecolors="none", edgecolors="tab:blue", marker="o", s=30, zorder=2),
        dict(color="rgba(0,0,0,0)", size=8, line=dict(color="royalblue", width=1.5)),
    ),
    "stopped": (
        "stopped early",
        dict(color="0.65", marker="o", s=24, zorder=1),
        dict(color="#a6a6a6", size=7),
    ),
    "unfinished": (
        "errored / unfinished",
        dict(color="0.65", marker="x", s=24, zorder=1),
        dict(color="#a6a6a6", size=7, symbol="x"),
    ),
}


def write_plots(
    table: pd.DataFrame,
    directory: str | Path,
    throughput: str = "samples_s",
    quality: str = QUALITY,
    distributions: Mapping[str, BaseDistribution] | None = None,
    directions: Sequence[Direction] = ("maximize", "maximize"),
) -> dict[str, Path]:
    """Write the sweep's plots into `directory`; returns name -> path of what was written.

    Names are the file names: pareto.png, pareto.html, and where the table supports them
    parallel_coordinates.html, importance.png and importance.html. `distributions` maps dotted fields
    to the Optuna distributions they were sampled from; without it they are inferred from the table.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Groups are told apart by index, which must then be unique.
    table = table.reset_index(drop=True)
    if table.empty:
        # A sweep with no trials may come as a frame without columns; give it the ones the plots read.
        table = pd.DataFrame(columns=[TRIAL_ID, STATUS, quality, throughput])
    written: dict[str, Path] = {}
    groups = _group_trials(table, quality, throughput)
    written["pareto.png"] = _pareto_png(table, groups, directory / "pareto.png", quality, throughput)
    written["pareto.html"] = _pareto_html(table, groups, directory / "pareto.html", quality, throughput)
    parallel = _parallel_coordinates(table, quality, throughput)
    if parallel is not None:
        written["parallel_coordinates.html"] = _write_html(parallel, directory / "parallel_coordinates.html")
    importances = parameter_importances(table, quality, throughput, distributions, directions)
    if importances is not None:
        written["importance.png"] = _importance_png(importances, directory / "importance.png")
        html = _importance_figure(importances)
        written["importance.html"] = _write_html(html, directory / "importance.html")
    return written


def short_trial_id(trial_id: str) -> str:
    """A trial id short enough to label a point: its trailing `_`-separated parts, at most 12 characters.

    Ray Tune ids end in the experiment's tag and the trial's number ('a1b2c_00003'), which identify
    the trial within its sweep; a prefix before them (the trainable's name) only adds width.
    """
    trial_id = str(trial_id)
    if len(trial_id) <= SHORT_ID_LENGTH:
        return trial_id
    kept = ""
    for part in reversed(trial_id.split("_")):
        candidate = f"{part}_{kept}" if kept else part
        if len(candidate) > SHORT_ID_LENGTH:
            break
        kept = candidate
    return kept or "…" + trial_id[-(SHORT_ID_LENGTH - 1) :]


def _group_trials(table: pd.DataFrame, quality: str, throughput: str) -> dict[str, pd.DataFrame]:
    """The trials with both objectives finite, split into the groups the Pareto plots draw differently."""
    finite = np.isfinite(objective_values(table, quality)) & np.isfinite(objective_values(table, throughput))
    status = table[STATUS].astype(str).to_numpy()
    feasible = is_feasible(table)
    front = pareto_front(table, quality, throughput)
    on_front = table.index.isin(front.index)
    completed = status == COMPLETED
    return {
        "front": front,
        "completed": table[finite & completed & feasible & ~on_front],
        "infeasible": table[finite & completed & ~feasible],
        "stopped": table[finite & (status == STOPPED)],
        "unfinished": table[finite & ~completed & (status != STOPPED)],
    }


def _pareto_png(
    table: pd.DataFrame, groups: dict[str, pd.DataFrame], path: Path, quality: str, throughput: str
) -> Path:
    figure = Figure(figsize=(7.5, 5.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name in _DRAW_ORDER:
        rows = groups[name]
        if rows.empty:
            continue
        label, style, _ = _GROUPS[name]
        axes.scatter(
            objective_values(rows, throughput),
            objective_values(rows, quality),
            label=f"{label} ({len(rows)})",
            **style,
        )
    front = groups["front"]
    if not front.empty:
        x, y = objective_values(front, throughput), objective_values(front, quality)
        axes.plot(x, y, color="tab:red", linewidth=1.2, zorder=3)
        for trial_id, x_value, y_value in zip(front[TRIAL_ID], x, y, strict=True):
            axes.annotate(
                short_trial_id(trial_id),
                (x_value, y_value),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
    if not any(len(rows) for rows in groups.values()):
        axes.text(
            0.5,
            0.5,
            f"no trial reported both {quality} and {throughput}",
            ha="center",
            va="center",
            transform=axes.transAxes,
        )
    else:
        axes.legend(loc="best", fontsize=8)
    axes.set_xlabel(throughput)
    axes.set_ylabel(quality)
    axes.set_title(f"{len(table)} trials, {len(front)} on the Pareto front")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def _hover_text(rows: pd.DataFrame, quality: str, throughput: str) -> list[str]:
    """What hovering over a trial shows: its id, status, objectives, why it is out, and its parameters."""
    texts = []
    for _, row in rows.iterrows():
        lines = [
            f"<b>{row['trial_id']}</b>",
            f"status: {row['status']}",
            f"{quality}: {format_figure(row[quality])}",
            f"{throughput}: {format_figure(row[throughput])}",
        ]
        for reason in (STOP_REASON, INFEASIBLE_REASON):
            if reason in rows.columns and isinstance(row[reason], str) and row[reason]:
                lines.append(f"{reason}: {row[reason]}")
        lines.extend(f"{column}: {_param_text(row[column])}" for column in parameter_columns(rows))
        texts.append("<br>".join(lines))
    return texts


def _param_text(value: Any) -> str:
    if isinstance(value, float):
        return format_figure(value)
    return str(value)


def _pareto_html(
    table: pd.DataFrame, groups: dict[str, pd.DataFrame], path: Path, quality: str, throughput: str
) -> Path:
    figure = go.Figure()
    for name in _DRAW_ORDER:
        rows = groups[name]
        if rows.empty:
            continue
        label, _, marker = _GROUPS[name]
        is_front = name == "front"
        figure.add_trace(
            go.Scatter(
                x=objective_values(rows, throughput),
                y=objective_values(rows, quality),
                mode="lines+markers+text" if is_front else "markers",
                name=f"{label} ({len(rows)})",
                marker=marker,
                line=dict(color="crimson") if is_front else None,
                text=[short_trial_id(trial_id) for trial_id in rows[TRIAL_ID]] if is_front else None,
                textposition="top right",
                hovertext=_hover_text(rows, quality, throughput),
                hoverinfo="text",
            )
        )
    figure.update_layout(
        title=f"{len(table)} trials, {len(groups['front'])} on the Pareto front",
        xaxis_title=throughput,
        yaxis_title=quality,
        template="plotly_white",
    )
    return _write_html(figure, path)


def _parallel_coordinates(table: pd.DataFrame, quality: str, throughput: str) -> go.Figure | None:
    """Parallel coordinates of the completed trials' parameters, coloured by quality; None if none fit.

    Rows with a parameter missing are left out (an axis cannot show a gap), and so are parameters no
    completed trial recorded.
    """
    completed = table[table[STATUS].eq(COMPLETED).to_numpy(dtype=bool)]
    completed = completed[np.isfinite(objective_values(completed, quality))]
    columns = [column for column in parameter_columns(completed) if completed[column].notna().any()]
    completed = completed.dropna(subset=columns)
    if completed.empty or not columns:
        return None
    dimensions = [_dimension(completed[column], column.removeprefix(PARAM_PREFIX)) for column in columns]
    quality_values = objective_values(completed, quality)
    dimensions.append(dict(label=quality, values=quality_values))
    throughput_values = objective_values(completed, throughput)
    if np.isfinite(throughput_values).all():
        dimensions.append(dict(label=throughput, values=throughput_values))
    figure = go.Figure(
        go.Parcoords(
            line=dict(color=quality_values, colorscale="Viridis", showscale=True, colorbar=dict(title=quality)),
            dimensions=dimensions,
        )
    )
    figure.update_layout(title=f"{len(completed)} completed trials, coloured by {quality}")
    return figure


def _dimension(values: pd.Series, label: str) -> dict[str, Any]:
    """One parallel-coordinates axis; categorical values become integer positions with their labels."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return dict(label=label, values=values.to_numpy(dtype=np.float64))
    texts = values.astype(str)
    categories = sorted(texts.unique(), key=_numeric_first)
    positions = {category: position for position, category in enumerate(categories)}
    return dict(
        label=label,
        values=[positions[text] for text in texts],
        tickvals=list(range(len(categories))),
        ticktext=categories,
        range=[-0.5, len(categories) - 0.5] if len(categories) > 1 else [-1, 1],
    )


def _numeric_first(text: str) -> tuple[int, float, str]:
    # Categories such as crop sizes read '64', '128', '256' in numeric order, other labels after them.
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _importance_png(importances: dict[str, dict[str, float]], path: Path) -> Path:
    fields = len(next(iter(importances.values())))
    figure = Figure(figsize=(5.0 * len(importances), 1.0 + 0.4 * fields))
    FigureCanvasAgg(figure)
    for position, (objective, shares) in enumerate(importances.items(), start=1):
        axes = figure.add_subplot(1, len(importances), position)
        # Ascending, because barh draws the first bar at the bottom: the most important ends on top.
        ordered = sorted(shares.items(), key=lambda item: item[1])
        axes.barh([field for field, _ in ordered], [share for _, share in ordered], color="tab:blue")
        axes.set_xlim(0, 1)
        axes.set_xlabel("importance (fANOVA)")
        axes.set_title(objective)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def _importance_figure(importances: dict[str, dict[str, float]]) -> go.Figure:
    figure = make_subplots(rows=1, cols=len(importances), subplot_titles=list(importances))
    for position, (objective, shares) in enumerate(importances.items(), start=1):
        ordered = sorted(shares.items(), key=lambda item: item[1])
        figure.add_trace(
            go.Bar(
                x=[share for _, share in ordered],
                y=[field for field, _ in ordered],
                orientation="h",
                name=objective,
                hovertemplate="%{y}: %{x:.3f}<extra></extra>",
            ),
            row=1,
            col=position,
        )
        figure.update_xaxes(range=[0, 1], title_text="importance (fANOVA)", row=1, col=position)
    figure.update_layout(
        title="Parameter importance per objective",
        showlegend=False,
        template="plotly_white",
    )
    return figure


def _write_html(figure: go.Figure, path: Path) -> Path:
    # plotly.min.js is written once beside the pages (3.5 MB), not into each of them, and not fetched from a
    # CDN, which would leave a blank page on an offline machine.
    figure.write_html(path, include_plotlyjs="directory", full_html=True)
    return path
