"""The lab harnesses' charts (fleet, soak, bench): matplotlib with the headless Agg backend.

Every chart has a title, labelled axes with units and a legend; the PNG's tEXt metadata repeats
them (Title, Description) so a test can check what was drawn without looking at pixels."""
from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen
from matplotlib.ticker import FuncFormatter, MaxNLocator

__all__ = ["MaxNLocator", "log_x", "new", "save"]

SIZE = (8.0, 4.5)  # inches; at DPI 100: 800 x 450 pixels
DPI = 100


def new(title: str, xlabel: str, ylabel: str):
    """-> (figure, axes) with the title and axis labels set."""
    fig, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def log_x(ax, values) -> None:
    """A log x axis from below the smallest value (bars start there), ticks as plain numbers."""
    ax.set_xscale("log")
    ax.set_xlim(min([0.5] + [v * 0.8 for v in values if v > 0]), max([2.0] + [v * 1.3 for v in values]))
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))


def save(fig, path, axes=None) -> pathlib.Path:
    """One legend for all the axes given (twin axes included), then the PNG with its metadata."""
    axes = axes or fig.axes
    handles, labels = [], []
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    axes[0].legend(handles, labels, loc="best", fontsize="small")
    desc = "; ".join([f"x: {axes[0].get_xlabel()}"] + [f"y: {ax.get_ylabel()}" for ax in axes]
                     + [f"legend: {', '.join(labels)}"])
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Title": axes[0].get_title(), "Description": desc})
    plt.close(fig)
    return path
