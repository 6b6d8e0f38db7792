"""The charts of the report's slice plot and the semantic-ID explorer (bars, grouped bars, heat maps), drawn with
matplotlib and returned as SVG markup: one ``<svg>`` element, without the XML prolog, so that it can stand alone as
a file or sit inline in an HTML page (no network, no script).

The bytes do not depend on the machine or the run: every chart is drawn under the same settings (``STYLE``), with
matplotlib's SVG canvas attached to a ``Figure`` of its own (no pyplot, no display, no global backend), the ids
of its clip paths derived from a fixed salt (``svg.hashsalt``) instead of random ones, no date in the file, and
its text kept as ``<text>`` elements (``svg.fonttype = none``) laid out with the metrics of DejaVu Sans, the font
that ships inside matplotlib, instead of glyph outlines of whatever font the machine has.
"""
from __future__ import annotations

import io

import matplotlib
import numpy as np
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")
STYLE = {
    "svg.hashsalt": "genrec-pipeline",  # clip-path ids from a fixed salt, not from a random UUID
    "svg.fonttype": "none",  # text as text: no glyph paths, which would depend on the font files found
    "font.family": "DejaVu Sans",  # bundled with matplotlib, so the layout uses the same metrics everywhere
    "font.size": 8,
    "text.parse_math": False,  # a "$" in a label is a dollar sign
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 9,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "legend.frameon": False,
}
NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}  # nothing that changes between runs
FEW_BARS = 24  # up to this many bars: one bar each, labelled with its value; more (a codebook): one filled step line


def _style(element_id: str | None) -> dict:
    """``STYLE`` for a chart with the id ``element_id``: its own salt, so that charts inline in one page do not
    share the ids of their clip paths and markers."""
    if element_id is None:
        return STYLE
    return {**STYLE, "svg.id": element_id, "svg.hashsalt": f"{STYLE['svg.hashsalt']}:{element_id}"}


def _figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasSVG(fig)
    return fig


def _markup(fig: Figure) -> str:
    """The figure as one ``<svg>`` element (matplotlib's XML declaration and DOCTYPE left out)."""
    out = io.StringIO()
    fig.savefig(out, format="svg", metadata=NO_METADATA)
    text = out.getvalue()
    return text[text.index("<svg"):]


def _num(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1000 else f"{x:,.0f}"


def bars(values, labels=None, title: str = "", width: float = 6.4, height: float = 1.9, color: str = PALETTE[0],
         y_label: str = "", element_id: str | None = None, x_label: str = "") -> str:
    """Vertical bars, one per value (``width`` x ``height`` inches): up to ``FEW_BARS`` each labelled below and
    with its value above; more as one filled step line with the first and last labels."""
    values = np.asarray(values, dtype=float)
    labels = [str(x) for x in labels] if labels is not None else [str(i) for i in range(len(values))]
    with matplotlib.rc_context(_style(element_id)):
        fig = _figure(width, height)
        ax = fig.subplots()
        if len(values) <= FEW_BARS:
            drawn = ax.bar(np.arange(len(values)), values, color=color, width=0.8)
            ax.bar_label(drawn, labels=[_num(v) for v in values], fontsize=6, padding=1)
            ax.set_xticks(np.arange(len(values)), labels, fontsize=7)
        else:
            ax.stairs(values, np.arange(len(values) + 1) - 0.5, fill=True, color=color)
            ax.set_xticks([0, len(values) - 1], [labels[0], labels[-1]])
        ax.set_xlim(-0.5, len(values) - 0.5)
        ax.set_ylim(0, max(float(values.max(initial=0.0)), 1e-12) * 1.12)
        ax.set_title(title)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        return _markup(fig)


def grouped_bars(panels: list[tuple[str, list[str], dict[str, list[float]]]], y_label: str = "",
                 colors: dict[str, str] | None = None, width: float = 7.2, panel_height: float = 2.2) -> str:
    """Panels stacked in one chart, each (title, groups, {series: one value per group}): a cluster of bars per
    group (a slice), a bar per series (a method; NaN: no bar), one legend for all panels. ``colors`` keeps a
    series' colour across panels (default: the palette in order of first appearance)."""
    names = list(dict.fromkeys(name for _, _, series in panels for name in series))
    colors = colors or {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    with matplotlib.rc_context(STYLE):
        fig = _figure(width, panel_height * max(len(panels), 1))
        axes = fig.subplots(max(len(panels), 1), 1, squeeze=False)[:, 0]
        for ax, (title, groups, series) in zip(axes, panels):
            bar_w = 0.8 / max(len(series), 1)
            for s, (name, vals) in enumerate(series.items()):
                vals = np.asarray(vals, dtype=float)
                drawn = ~np.isnan(vals)
                x = np.arange(len(groups)) - 0.4 + (s + 0.5) * bar_w
                ax.bar(x[drawn], vals[drawn], width=bar_w * 0.92, color=colors[name], label=name)
            ax.set_xticks(np.arange(len(groups)), groups)
            ax.set_ylim(bottom=0)
            ax.set_title(title)
            ax.set_ylabel(y_label)
        handles = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
        fig.legend([handles[n] for n in names if n in handles], [n for n in names if n in handles],
                   loc="outside right upper")
        return _markup(fig)


def heatmap(matrix, row_labels: list[str], col_labels: list[str], title: str = "", cell: float = 0.2,
            color: str = PALETTE[0], element_id: str | None = None) -> str:
    """Rows x columns of values from white (0) to ``color`` (the largest value), ``cell`` inches a side, with the
    scale beside it; the first row on top, the column labels above (every fourth beyond 40 columns)."""
    values = np.asarray(matrix, dtype=float)
    rows, cols = values.shape
    top = max(float(values.max(initial=0.0)), 1e-12)
    # 32 shades: the colour bar stays vector (matplotlib rasterises one with 50 colours or more)
    shades = LinearSegmentedColormap.from_list("white-to-colour", ["#ffffff", color], N=32)
    with matplotlib.rc_context(_style(element_id)):
        fig = _figure(1.9 + cols * cell, 0.75 + rows * cell * 0.8)
        ax = fig.subplots()
        mesh = ax.pcolormesh(values, cmap=shades, vmin=0.0, vmax=top)
        mesh.set_clip_on(False)  # the cells fill the axes: no clip path to write with each of them
        ax.invert_yaxis()
        ax.xaxis.tick_top()
        shown = [j for j in range(cols) if cols <= 40 or j % 4 == 0]
        ax.set_xticks(np.array(shown) + 0.5, [str(col_labels[j]) for j in shown], fontsize=7)
        ax.set_yticks(np.arange(rows) + 0.5, [str(r) for r in row_labels], fontsize=7)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(title)
        fig.colorbar(mesh, ax=ax, shrink=0.8, aspect=30)
        return _markup(fig)

