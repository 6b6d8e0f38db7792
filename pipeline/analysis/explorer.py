"""The semantic-ID explorer: one self-contained HTML page per item -> ID table (each tokenizer's, and a model's
own learned IDs such as ETEGRec's), and one per DECOR model with its composition weights.

A page shows the numbers of the ``semantic_ids`` stage (``semantic_id_stats``: utilisation per level,
collisions), per-level code usage, how many items share each prefix, the collision groups with their titles,
a browser of the items under any first-level code, how often an item's nearest SASRec neighbours share its
prefix (LETTER's argument that IDs should follow collaborative signal, LETTER §3.2), and the agreement with
every other page's IDs. Charts are inline SVG (``pipeline.analysis.svg``) and the browser is a few lines of
plain JavaScript over inline JSON: no network, no plotting library.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape

import numpy as np

from pipeline.analysis import svg
from pipeline.tokenizers.semantic_ids import semantic_id_stats

NEIGHBOURS = 10  # SASRec neighbours per item for the agreement figures
TITLE_CHARS = 48  # titles are cut to this length to keep the pages small
TOP_COLLISION_GROUPS = 12


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


STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1040px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4}.num{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#666}
nav a{margin-right:12px}select{font-size:14px}#code-items{max-height:420px;overflow:auto;display:block}"""

BROWSER_JS = """
const D = JSON.parse(document.getElementById('explorer-data').textContent);
const select = document.getElementById('code');
const counts = new Map();
D.ids.forEach(id => counts.set(id[0], (counts.get(id[0]) || 0) + 1));
const byCount = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]);
for (const [code, n] of byCount) {
  const o = document.createElement('option'); o.value = code; o.textContent = `code ${code} (${n} items)`;
  select.appendChild(o);
}
function show(code) {
  const rows = D.ids.map((id, item) => [item, id]).filter(([, id]) => id[0] === code)
    .sort((a, b) => a[1].join(',').localeCompare(b[1].join(','), undefined, {numeric: true}));
  const body = document.querySelector('#code-items tbody');
  body.replaceChildren(...rows.map(([item, id]) => {
    const tr = document.createElement('tr');
    for (const text of [item, '(' + id.join(', ') + ')', D.titles[item]]) {
      const td = document.createElement('td'); td.textContent = text; tr.appendChild(td);
    }
    return tr;
  }));
  let note = `${rows.length} items under first code ${code}.`;
  if (D.neighbours) {
    const share = rows.reduce((s, [item]) => s + D.neighbours.first_code_share[item], 0) / rows.length;
    note += ` Their ${D.neighbours.k} nearest SASRec neighbours share this first code \
${(100 * share).toFixed(1)} % of the time.`;
  }
  document.getElementById('code-note').textContent = note;
}
select.addEventListener('change', () => show(Number(select.value)));
if (byCount.length) { select.value = byCount[0][0]; show(byCount[0][0]); }
"""


def _pct(x: float) -> str:
    return "—" if x != x else f"{100 * x:.1f} %"


def _nav(pages: list[str], current: str) -> str:
    links = ['<a href="index.html">all pages</a>'] + [
        f"<b>{escape(p)}</b>" if p == current else f'<a href="{escape(p)}.html">{escape(p)}</a>' for p in pages]
    return "<nav>" + " ".join(links) + "</nav>"


def _json_script(data: dict) -> str:
    # inside <script>, "</" would end the element: escape it (JSON allows "\\/")
    return ('<script type="application/json" id="explorer-data">'
            + json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/") + "</script>")


def render_page(data: dict, pages: list[str]) -> str:
    L, K = data["levels"], data["codebook_size"]
    s = data["stats"]
    stat_rows = "".join(f'<tr><th>{escape(k)}</th><td class="num" id="stat-{escape(k)}">{escape(str(v))}</td></tr>'
                        for k, v in s.items())
    usage = "".join(svg.bars(data["usage"][level], [f"code {c}" for c in range(K)],
                             title=f"Level {level + 1}: items per code ({sum(1 for u in data['usage'][level] if u)} "
                             f"of {K} codes used)", y_label="items", element_id=f"usage-l{level + 1}")
                    for level in range(L))
    prefix_rows = "".join(f"<tr><td>{p['length']}</td><td class='num'>{p['prefixes']:,}</td>"
                          f"<td class='num'>{p['mean_items']:.2f}</td><td class='num'>{p['max_items']}</td></tr>"
                          for p in data["prefix"])
    first = data["prefix"][0]["histogram"]
    prefix_chart = svg.bars(first[1:], [f"{n} items" for n in range(1, len(first))],
                            title="First-level groups by size (how many first codes hold n items)", y_label="codes")
    groups = "".join(
        "<tr><td class='num'>" + str(len(g)) + "</td><td>(" + ", ".join(str(c) for c in data["ids"][g[0]][:L])
        + ")</td><td>" + "<br>".join(escape(data["titles"][i]) for i in g[:6]) + (" …" if len(g) > 6 else "")
        + "</td></tr>" for g in data["largest_collision_groups"])
    neighbours = ""
    if "neighbours" in data:
        nb = data["neighbours"]
        neighbours = ("<h2>Agreement with SASRec</h2><p>For every item, its " + str(nb["k"])
                      + " nearest items by "
                      "SASRec's item embeddings (cosine): how often they share the item's prefix, against the share "
                      "two random items would.</p><table id='neighbours'><tr><th>prefix length</th><th>neighbours "
                      "sharing it</th><th>chance</th><th>ratio</th></tr>" + "".join(
                          f"<tr><td>{r['prefix']}</td><td class='num'>{_pct(r['share'])}</td><td class='num'>"
                          f"{_pct(r['chance'])}</td><td class='num'>{r['share'] / r['chance']:.1f}×</td></tr>"
                          if r["chance"] > 0 else
                          f"<tr><td>{r['prefix']}</td><td class='num'>{_pct(r['share'])}</td><td>—</td><td>—</td></tr>"
                          for r in nb["levels"]) + "</table>")
    side = "".join(f"<tr><td><a href='{escape(r['other'])}.html'>{escape(r['other'])}</a></td><td class='num'>"
                   + (_pct(r["same_first_code"]) if r["same_levels"] else "—") + f"</td><td class='num'>"
                   f"{_pct(r['pairs_kept'])}</td></tr>" for r in data["side_by_side"])
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">\
<title>{escape(data['name'])}: semantic IDs</title>
<style>{STYLE}</style></head><body>
{_nav(pages, data['name'])}
<h1>Semantic IDs: {escape(data['name'])}</h1>
<p class="muted">{escape(data['source'])}. {data['items']:,} items, {L} levels of {K} codes plus a collision token.</p>
<h2>Summary</h2><table id="stats">{stat_rows}</table>
<h2>Code usage per level</h2>{usage}
<h2>Items per prefix</h2><table><tr><th>prefix length</th><th>distinct prefixes</th><th>mean items</th>
<th>most items</th></tr>{prefix_rows}</table>{prefix_chart}
<h2>Collision groups</h2><p>{data['collision_groups']:,} groups of items share all {L} codes and are told apart by the
collision token ({s['n_colliding_items']:,} items). The largest:</p>
<table id="collisions"><tr><th>items</th><th>codes</th><th>titles</th></tr>{groups}</table>
<h2>Items under a first-level code</h2><p><select id="code"></select> <span id="code-note"></span></p>
<table id="code-items"><thead><tr><th>item</th><th>semantic ID</th><th>title</th></tr></thead><tbody></tbody></table>
{neighbours}
<h2>Side by side</h2><p>Against the other pages' IDs: the share of items whose first code is the same number (meaningful
only between IDs that share codebooks, such as ETEGRec's learned IDs and the tokenizer they start from), and, of the
item pairs that share a first code here, the share that share one there (independent of how codes are numbered).</p>
<table id="side-by-side"><tr><th>other IDs</th><th>same first code</th><th>pairs still together</th></tr>{side}</table>
{_json_script(data)}
<script>{BROWSER_JS}</script>
</body></html>
"""


def render_composition(name: str, weights: np.ndarray, users: np.ndarray, tokenizer: str, pages: list[str],
                       top_codes: int = 16, shown_users: int = 24) -> str:
    """DECOR's composition weights (users, levels, K): per level, the mean weight of every code over the users,
    and a users x codes heat map of the most-weighted codes for a sample of users (DECOR §3.2, Table 3)."""
    n_users, L, K = weights.shape
    mean = weights.mean(axis=0)
    parts = []
    for level in range(L):
        top = np.argsort(-mean[level], kind="stable")[:top_codes]
        # an even sample of the users, ordered by the code they weight most, so that groups of users show as blocks
        rows = np.linspace(0, n_users - 1, min(shown_users, n_users)).astype(int)
        rows = rows[np.lexsort((rows, weights[rows, level].argmax(axis=1)))]
        parts.append(f"<h2>Level {level + 1}</h2>" + svg.bars(
            mean[level], [f"code {c}" for c in range(K)], title=f"Mean weight per code over {n_users:,} test users "
            f"(uniform: {1 / K:.4f})", y_label="weight",
            element_id=f"composition-mean-l{level + 1}")
            + f"<p>The weights of its {len(top)} most-weighted codes (columns, by code) for {len(rows)} users (rows: "
            "an even sample of the test users, ordered by the code each weights most):</p>"
            + svg.heatmap(weights[rows][:, level][:, top].tolist(), [f"user {u}" for u in users[rows]],
                          [str(c) for c in top], cell=22))
    active = [(mean[level] >= 1 / K).mean() for level in range(L)]
    summary = "".join(f"<tr><td>{level + 1}</td><td class='num'>{_pct(active[level])}</td><td class='num'>"
                      f"{mean[level].max():.4f}</td></tr>" for level in range(L))
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(name)}: composition</title>
<style>{STYLE}</style></head><body>
{_nav(pages, name)}
<h1>DECOR composition: {escape(name)}</h1>
<p class="muted">Which codes compose each user's decoder inputs: the weights β over every code of a level for the test
users' histories (DECOR §3.2), from the trained model. Its codes are \
<a href="{escape(tokenizer)}.html">{escape(tokenizer)}</a>'s.
A collapsed composition shows one dark column; a composition that depends on the user, rows that differ.</p>
<table id="composition"><tr><th>level</th><th>codes above uniform weight</th>\
<th>largest mean weight</th></tr>{summary}</table>
{''.join(parts)}
</body></html>
"""


def render_index(summaries: list[dict], pages: list[str]) -> str:
    rows = "".join(f"<tr><td><a href='{escape(s['name'])}.html'>{escape(s['name'])}</a></td>"
                   f"<td>{escape(s['kind'])}</td><td>{escape(s['summary'])}</td></tr>" for s in summaries)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Semantic-ID explorer</title>
<style>{STYLE}</style></head><body>
{_nav(pages, '')}
<h1>Semantic-ID explorer</h1><p>One page per item → ID table (each tokenizer's, and a model's own learned IDs) and
per DECOR model. Written by the <code>explore</code> stage.</p>
<table><tr><th>page</th><th>what</th><th>summary</th></tr>{rows}</table></body></html>
"""
