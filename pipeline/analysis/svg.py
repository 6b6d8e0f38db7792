"""Small inline SVG charts (bars, grouped bars, heat maps) for the report's slice plot and the semantic-ID
explorer: drawn as text, so the pages need no plotting library and no network."""
from __future__ import annotations

import math
from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")


def _num(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1000 else f"{x:,.0f}"


def _frame(width: int, height: int, title: str, element_id: str | None, left: float, pad_top: float,
           inner_w: float, inner_h: float, top: float, y_label: str) -> list[str]:
    """A bar chart's opening tag, title, baseline, y-axis extremes and y label."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
           + (f' id="{escape(element_id)}"' if element_id else "") + f' aria-label="{escape(title)}">',
           f'<text x="{left}" y="14" font-size="12" font-weight="bold">{escape(title)}</text>',
           f'<line x1="{left}" y1="{pad_top + inner_h}" x2="{left + inner_w}" y2="{pad_top + inner_h}" stroke="#888"/>',
           f'<text x="{left - 4}" y="{pad_top + 8}" font-size="10" text-anchor="end">{_num(top)}</text>',
           f'<text x="{left - 4}" y="{pad_top + inner_h}" font-size="10" text-anchor="end">0</text>']
    if y_label:
        out.append(f'<text x="10" y="{pad_top + inner_h / 2}" font-size="10" transform="rotate(-90 10 '
                   f'{pad_top + inner_h / 2})" text-anchor="middle">{escape(y_label)}</text>')
    return out


def bars(values, labels=None, title: str = "", width: int = 640, height: int = 160, color: str = PALETTE[0],
         y_label: str = "", element_id: str | None = None) -> str:
    """Vertical bars, one per value; each bar's tooltip names its label and value."""
    values = [float(v) for v in values]
    labels = list(labels) if labels is not None else [str(i) for i in range(len(values))]
    top = max(values + [1e-12])
    left, bottom, pad_top = 44, 22, 22
    inner_w, inner_h = width - left - 8, height - bottom - pad_top
    step = inner_w / max(len(values), 1)
    out = _frame(width, height, title, element_id, left, pad_top, inner_w, inner_h, top, y_label)
    if len(values) <= 24:  # few bars: one element each, with a tooltip
        for i, (v, label) in enumerate(zip(values, labels)):
            h = inner_h * v / top
            out.append(f'<rect x="{left + i * step:.1f}" y="{pad_top + inner_h - h:.1f}" '
                       f'width="{max(step - 0.5, 0.5):.1f}" '
                       f'height="{h:.1f}" fill="{color}"><title>{escape(str(label))}: {_num(v)}</title></rect>')
    else:  # many bars (a codebook): one path, which keeps the page small
        w = max(step - 0.3, 0.3)
        d = "".join(f"M{left + i * step:.1f} {pad_top + inner_h:.1f}"
                    f"v{-inner_h * v / top:.1f}h{w:.1f}v{inner_h * v / top:.1f}z"
                    for i, v in enumerate(values) if v > 0)
        out.append(f'<path d="{d}" fill="{color}"/>')
    if len(values) <= 24:  # room for every label
        for i, label in enumerate(labels):
            out.append(f'<text x="{left + (i + 0.5) * step:.2f}" y="{height - 6}" font-size="10" '
                       f'text-anchor="middle">{escape(str(label))}</text>')
    else:
        out.append(f'<text x="{left}" y="{height - 6}" font-size="10">{escape(str(labels[0]))}</text>')
        out.append(f'<text x="{left + inner_w}" y="{height - 6}" font-size="10" text-anchor="end">'
                   f'{escape(str(labels[-1]))}</text>')
    out.append("</svg>")
    return "\n".join(out)


def grouped_bars(groups: list[str], series: dict[str, list[float]], title: str = "", width: int = 720,
                 height: int = 220, y_label: str = "", colors: dict[str, str] | None = None) -> str:
    """One cluster of bars per group (a slice), one bar per series (a method), with a legend; ``colors`` keeps a
    series' colour the same across charts (default: the palette in series order)."""
    names = list(series)
    colors = colors or {name: PALETTE[s % len(PALETTE)] for s, name in enumerate(names)}
    top = max([v for vals in series.values() for v in vals if not math.isnan(v)] + [1e-12])
    left, bottom, pad_top, legend_w = 48, 24, 22, 120
    inner_w, inner_h = width - left - legend_w, height - bottom - pad_top
    cluster = inner_w / max(len(groups), 1)
    bar_w = cluster * 0.8 / max(len(names), 1)
    out = _frame(width, height, title, None, left, pad_top, inner_w, inner_h, top, y_label)
    for g, group in enumerate(groups):
        x0 = left + g * cluster + cluster * 0.1
        for s, name in enumerate(names):
            v = series[name][g]
            if math.isnan(v):
                continue
            h = inner_h * v / top
            out.append(f'<rect x="{x0 + s * bar_w:.2f}" y="{pad_top + inner_h - h:.2f}" width="{bar_w * 0.92:.2f}" '
                       f'height="{h:.2f}" fill="{colors[name]}"><title>{escape(name)}, '
                       f'{escape(group)}: {_num(v)}</title></rect>')
        out.append(f'<text x="{left + (g + 0.5) * cluster:.2f}" y="{height - 8}" font-size="10" '
                   f'text-anchor="middle">{escape(group)}</text>')
    for s, name in enumerate(names):
        y = pad_top + 4 + s * 14
        out.append(f'<rect x="{width - legend_w + 8}" y="{y}" width="10" height="10" fill="{colors[name]}"/>')
        out.append(f'<text x="{width - legend_w + 22}" y="{y + 9}" font-size="10">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def heatmap(matrix, row_labels: list[str], col_labels: list[str], title: str = "", cell: int = 12,
            color: tuple[int, int, int] = (78, 121, 167)) -> str:
    """Rows x columns of values in [0, max]: darker is larger (the scale's top is the largest value)."""
    rows, cols = len(row_labels), len(col_labels)
    top = max([float(v) for r in matrix for v in r] + [1e-12])
    left, pad_top = 70, 34
    width, height = left + cols * cell + 8, pad_top + rows * cell + 8
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(title)}">',
           f'<text x="4" y="14" font-size="12" font-weight="bold">{escape(title)}</text>']
    for j, label in enumerate(col_labels):
        if cols <= 40 or j % 4 == 0:
            out.append(f'<text x="{left + j * cell + cell / 2:.1f}" y="{pad_top - 4}" font-size="8" '
                       f'text-anchor="middle">{escape(str(label))}</text>')
    for i, label in enumerate(row_labels):
        out.append(f'<text x="{left - 4}" y="{pad_top + i * cell + cell - 2}" font-size="9" text-anchor="end">'
                   f'{escape(str(label))}</text>')
        for j in range(cols):
            shade = float(matrix[i][j]) / top
            fill = "#" + "".join(f"{int(255 - (255 - c) * shade):02x}" for c in color)
            out.append(f'<rect x="{left + j * cell}" y="{pad_top + i * cell}" width="{cell - 1}" height="{cell - 1}" '
                       f'fill="{fill}"/>')
    out.append("</svg>")
    return "\n".join(out)
