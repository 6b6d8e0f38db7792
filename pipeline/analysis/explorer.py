"""The semantic-ID explorer: one self-contained HTML page per item -> ID table (each tokenizer's, and a model's
own learned IDs such as ETEGRec's), and one per DECOR model with its composition weights.

A page shows the numbers of the ``semantic_ids`` stage (``semantic_id_stats``: utilisation per level,
collisions), per-level code usage, how many items share each prefix, the collision groups with their titles,
a browser of the items under any first-level code, how often an item's nearest SASRec neighbours share its
prefix (LETTER's argument that IDs should follow collaborative signal, LETTER §3.2), and the agreement with
every other page's IDs. Each page is one self-contained file rendered from the Jinja2 templates in ``templates/``
(autoescaped): charts as inline SVG drawn by matplotlib (``pipeline.analysis.svg``), the browser a few lines of plain
JavaScript over the page's figures as inline JSON; no network, nothing loaded from elsewhere.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import jinja2
import numpy as np
from markupsafe import Markup

from pipeline.analysis import svg
from pipeline.tokenizers.semantic_ids import semantic_id_stats

NEIGHBOURS = 10  # SASRec neighbours per item for the agreement figures
TITLE_CHARS = 48  # titles are cut to this length to keep the pages small
TOP_COLLISION_GROUPS = 12
TEMPLATE_FOLDER = "templates"  # the pages' Jinja2 templates, beside this module inside the package


@dataclass
class IdTable:
    name: str
    ids: np.ndarray  # (N, L + 1): codes c1..cL and the collision token
    codebook_size: int
    source: str  # where the IDs come from, in words
    compared_to: list[str] = field(default_factory=list)  # pages to set side by side first

    @property
    def levels(self) -> int:
        return self.ids.shape[1] - 1


def prefix_groups(codes: np.ndarray, length: int) -> np.ndarray:
    """Per item, how many items share its first ``length`` codes."""
    _, inverse, counts = np.unique(codes[:, :length], axis=0, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)]


def sasrec_neighbours(embeddings: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """(N, k) each item's nearest items by cosine of SASRec's item embeddings (itself excluded)."""
    e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    out = np.empty((len(e), k), dtype=np.int64)
    for start in range(0, len(e), 1024):  # (1024, N) blocks: bounded memory for large catalogues
        sims = e[start:start + 1024] @ e.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[start:start + 1024] = np.take_along_axis(part, order, axis=1)
    return out


def neighbour_agreement(codes: np.ndarray, neighbours: np.ndarray) -> list[dict]:
    """Per prefix length: the share of (item, SASRec neighbour) pairs that share the prefix, and the share two
    random distinct items would (the chance level for these group sizes)."""
    n = len(codes)
    out = []
    for length in range(1, codes.shape[1] + 1):
        same = (codes[neighbours, :length] == codes[:, None, :length]).all(axis=2)
        chance = float(((prefix_groups(codes, length) - 1) / max(n - 1, 1)).mean())
        out.append({"prefix": length, "share": float(same.mean()), "chance": chance})
    return out


def pair_agreement(first_a: np.ndarray, first_b: np.ndarray) -> float:
    """Of the item pairs that share a first-level code in A, the share that also share one in B (codes are
    labels: this does not depend on their numbering)."""
    pairs = lambda counts: float((counts * (counts - 1) / 2).sum())  # noqa: E731
    _, joint = np.unique(np.stack([first_a, first_b], axis=1), axis=0, return_counts=True)
    together_a = pairs(np.unique(first_a, return_counts=True)[1])
    return pairs(joint) / together_a if together_a else float("nan")


def collision_groups(ids: np.ndarray, limit: int = TOP_COLLISION_GROUPS) -> tuple[int, list[list[int]]]:
    """The number of groups of items with the same codes before the collision token, and the largest ones."""
    L = ids.shape[1] - 1
    _, inverse, counts = np.unique(ids[:, :L], axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    shared = np.flatnonzero(counts > 1)
    largest = shared[np.argsort(-counts[shared], kind="stable")][:limit]
    return int(len(shared)), [np.flatnonzero(inverse == g).tolist() for g in largest]


def page_data(table: IdTable, titles: list[str], neighbours: np.ndarray | None, others: dict[str, IdTable]) -> dict:
    """Everything a page shows, as plain numbers (also what the tests read back from the page)."""
    ids, L, K = table.ids, table.levels, table.codebook_size
    codes = ids[:, :L]
    stats = semantic_id_stats(codes, ids, K)
    usage = [np.bincount(codes[:, level], minlength=K).tolist() for level in range(L)]
    prefix = []
    for length in range(1, L + 1):
        sizes = np.unique(codes[:, :length], axis=0, return_counts=True)[1]
        prefix.append({"length": length, "prefixes": int(len(sizes)), "mean_items": float(sizes.mean()),
                       "max_items": int(sizes.max()), "histogram": np.bincount(sizes).tolist()})
    n_groups, groups = collision_groups(ids)
    data = {"name": table.name, "source": table.source, "items": int(len(ids)), "levels": L, "codebook_size": K,
            "stats": stats, "usage": usage, "prefix": prefix, "collision_groups": n_groups,
            "largest_collision_groups": groups, "ids": ids.tolist(),
            "titles": [t[:TITLE_CHARS] for t in titles]}
    if neighbours is not None:
        data["neighbours"] = {"k": int(neighbours.shape[1]), "levels": neighbour_agreement(codes, neighbours),
                              "first_code_share":
                                  (codes[neighbours, 0] == codes[:, None, 0]).mean(axis=1).round(2).tolist()}
    names = [n for n in table.compared_to if n in others] + sorted(n for n in others if n not in table.compared_to)
    data["side_by_side"] = [
        {"other": name, "same_first_code": float((others[name].ids[:, 0] == ids[:, 0]).mean()),
         "pairs_kept": pair_agreement(ids[:, 0], others[name].ids[:, 0]),
         "same_levels": others[name].levels == L and others[name].codebook_size == K}
        for name in names if len(others[name].ids) == len(ids) and name != table.name]
    return data


def _pct(x: float) -> str:
    return "—" if x != x else f"{100 * x:.1f} %"


@functools.cache
def templates() -> jinja2.Environment:
    """The pages' Jinja2 templates, found through this package (``TEMPLATE_FOLDER`` beside this module, wherever it
    is installed), every value HTML-escaped unless it is ``Markup`` (the charts), undefined names an error."""
    env = jinja2.Environment(loader=jinja2.PackageLoader(__package__, TEMPLATE_FOLDER), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True)
    env.filters.update(pct=_pct, thousands=lambda n: f"{n:,}")
    # the page's figures for its browser: compact, in the order page_data builds them (tojson escapes <, >, &, ')
    env.policies["json.dumps_kwargs"] = {"separators": (",", ":"), "ensure_ascii": False, "sort_keys": False}
    return env


def render_page(data: dict, pages: list[str]) -> str:
    """An ID table's page (``page_data``): its figures, charts, the code browser and the data behind it."""
    L, K = data["levels"], data["codebook_size"]
    usage = [Markup(svg.bars(data["usage"][level], [f"code {c}" for c in range(K)],
                             title=f"Level {level + 1}: items per code ({sum(1 for u in data['usage'][level] if u)} "
                             f"of {K} codes used)", y_label="items", element_id=f"usage-l{level + 1}"))
             for level in range(L)]
    first = data["prefix"][0]["histogram"]
    prefix_chart = Markup(svg.bars(first[1:], [str(n) for n in range(1, len(first))],
                                   title="First-level groups by size (how many first codes hold n items)",
                                   x_label="n items", y_label="codes", element_id="prefix-sizes"))
    return templates().get_template("id_table.html.j2").render(d=data, pages=pages, current=data["name"],
                                                                usage_charts=usage, prefix_chart=prefix_chart)


def render_composition(name: str, weights: np.ndarray, users: np.ndarray, tokenizer: str, pages: list[str],
                       top_codes: int = 16, shown_users: int = 24) -> str:
    """DECOR's composition weights (users, levels, K): per level, the mean weight of every code over the users,
    and a users x codes heat map of the most-weighted codes for a sample of users (DECOR §3.2, Table 3)."""
    n_users, L, K = weights.shape
    mean = weights.mean(axis=0)
    levels = []
    for level in range(L):
        top = np.argsort(-mean[level], kind="stable")[:top_codes]
        # an even sample of the users, ordered by the code they weight most, so that groups of users show as blocks
        rows = np.linspace(0, n_users - 1, min(shown_users, n_users)).astype(int)
        rows = rows[np.lexsort((rows, weights[rows, level].argmax(axis=1)))]
        levels.append({
            "number": level + 1, "active": float((mean[level] >= 1 / K).mean()), "largest": float(mean[level].max()),
            "codes_shown": len(top), "users_shown": len(rows),
            "mean_chart": Markup(svg.bars(mean[level], [f"code {c}" for c in range(K)],
                                          title=f"Mean weight per code over {n_users:,} test users "
                                          f"(uniform: {1 / K:.4f})", y_label="weight",
                                          element_id=f"composition-mean-l{level + 1}")),
            "heatmap": Markup(svg.heatmap(weights[rows][:, level][:, top].tolist(), [f"user {u}" for u in users[rows]],
                                          [str(c) for c in top], element_id=f"composition-users-l{level + 1}"))})
    return templates().get_template("composition.html.j2").render(name=name, tokenizer=tokenizer, levels=levels,
                                                                   pages=pages, current=name)


def render_index(summaries: list[dict], pages: list[str]) -> str:
    return templates().get_template("index.html.j2").render(summaries=summaries, pages=pages, current="")
