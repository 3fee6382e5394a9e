"""Plots of a search (PNG through matplotlib): optimisation history, parameter importances, Pareto front.

Needs matplotlib (``pip install 'adaptermath[search]'``); each function raises a one-line
:class:`~adaptermath.errors.AdapterMathError` without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .errors import AdapterMathError


class PlottedSearch(Protocol):
    """What the plots read of a search's result (:class:`adaptermath.search.SearchResult`)."""

    @property
    def trials(self) -> Sequence[Any]: ...  # TrialRow: number, values, feasible

    @property
    def objectives(self) -> Sequence[Any]: ...  # Objective: metric, direction

    @property
    def chosen(self) -> Any: ...  # the chosen TrialRow, or None

    @property
    def front(self) -> Sequence[int]: ...

    @property
    def importances(self) -> Mapping[str, float] | None: ...

    @property
    def settings(self) -> Any: ...  # SearchSettings: constraints, l1, sampler

    @property
    def plan(self) -> Any: ...  # SearchPlan: expression


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise AdapterMathError("plotting needs matplotlib: pip install 'adaptermath[search]'") from None
    return plt


def _save(plt: Any, figure: Any, path: str | Path) -> Path:
    figure.tight_layout()
    target = Path(path)
    figure.savefig(target, dpi=120)
    plt.close(figure)
    return target


def plot_history(result: PlottedSearch, path: str | Path) -> Path | None:
    """Each objective's value per trial, and the best so far (single objective), in trial order."""
    if not result.trials:
        return None
    plt = _pyplot()
    goals = result.objectives
    figure, axes = plt.subplots(len(goals), 1, figsize=(6, 2.6 + 1.6 * len(goals)), squeeze=False)
    numbers = [row.number for row in result.trials]
    for index, goal in enumerate(goals):
        axis = axes[index][0]
        values = [row.values[index] for row in result.trials]
        colours = ["tab:blue" if row.feasible else "tab:gray" for row in result.trials]
        axis.scatter(numbers, values, s=18, c=colours, label="trial (grey: infeasible)" if result.settings.constraints else "trial")
        if len(goals) == 1:
            best, running = [], None
            for row in result.trials:
                if row.feasible:
                    value = row.values[0]
                    better = running is None or (value > running if goal.direction == "max" else value < running)
                    running = value if better else running
                best.append(running)
            axis.step(numbers, best, where="post", color="tab:red", label="best so far")
        if result.chosen is not None:
            axis.scatter([result.chosen.number], [result.chosen.values[index]], s=120, facecolors="none",
                         edgecolors="red", zorder=3, label="chosen")
        penalised = " − L1" if result.settings.l1 and goal.direction == "max" else (" + L1" if result.settings.l1 else "")
        axis.set_ylabel(f"{goal.metric}{penalised} ({goal.direction})")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    axes[-1][0].set_xlabel("trial")
    axes[0][0].set_title(f"{result.plan.expression} — {result.settings.sampler}")
    return _save(plt, figure, path)


def plot_importances(result: PlottedSearch, path: str | Path) -> Path | None:
    """Horizontal bars of the PED-ANOVA importances (None when they could not be computed)."""
    if not result.importances:
        return None
    plt = _pyplot()
    names = list(result.importances)[::-1]
    figure, axis = plt.subplots(figsize=(6, 1.2 + 0.45 * len(names)))
    axis.barh(names, [result.importances[n] for n in names], color="tab:blue")
    axis.set_xlabel(f"importance for {result.objectives[0].metric} (PED-ANOVA)")
    axis.set_xlim(0, 1)
    axis.grid(alpha=0.3, axis="x")
    return _save(plt, figure, path)


def plot_pareto(result: PlottedSearch, path: str | Path) -> Path | None:
    """The first two objectives of every trial (infeasible ones as crosses); the Pareto front of the
    feasible trials joined and the chosen trial ringed."""
    if len(result.objectives) < 2 or not result.trials:
        return None
    plt = _pyplot()
    first, second = result.objectives[0], result.objectives[1]
    figure, axis = plt.subplots(figsize=(6, 4.5))
    front = set(result.front)
    others = [r for r in result.trials if r.number not in front and r.feasible]
    infeasible = [r for r in result.trials if not r.feasible]
    axis.scatter([r.values[0] for r in others], [r.values[1] for r in others], s=16, color="tab:gray", label="trial")
    if infeasible:
        axis.scatter([r.values[0] for r in infeasible], [r.values[1] for r in infeasible], s=20, marker="x",
                     color="tab:orange", label="infeasible")
    on_front = sorted((r for r in result.trials if r.number in front), key=lambda r: r.values[0])
    axis.plot([r.values[0] for r in on_front], [r.values[1] for r in on_front], marker="o", color="tab:blue",
              label="Pareto front")
    if result.chosen is not None:
        axis.scatter([result.chosen.values[0]], [result.chosen.values[1]], s=140, facecolors="none", edgecolors="red",
                     zorder=3, label=f"chosen (trial {result.chosen.number})")
    axis.set_xlabel(f"{first.metric} ({first.direction})")
    axis.set_ylabel(f"{second.metric} ({second.direction})")
    axis.set_title(result.plan.expression)
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    return _save(plt, figure, path)
