"""``report.html``: one run of the pipeline, on one self-contained page.

Written into the run's folder (``<lakehouse>/_runs/<run_id>/``) at the end of every ``codemill
run`` and rebuilt by ``codemill report [--run RUN_ID]``. It reads the run's summary.json and the
tables at the Delta versions the run wrote (never a later version), with deltalake and pyarrow:
no Spark. Plots are matplotlib figures inlined as SVG, so the page needs nothing but itself; a
table the run did not write is named as such instead of plotted.

Sections: the retention funnel (rows kept per stage) and the drops by stage and reason; languages
before (bronze.files) and after (silver.unique_files) curation; file sizes (silver.files);
duplicate-cluster sizes (silver.dup_clusters); samples per task type (gold.samples); gold.sft's
records per source, their quality scores and their lengths (tokens when ``sft.tokenizer`` was
set, else characters, and the page says which); the ledger rows of the run.
"""

from __future__ import annotations

import html
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# (id, title) of every plot, in page order; tests check each one is drawn
PLOTS = (
    ("funnel", "Retention funnel: rows kept by each stage"),
    ("drops", "Dropped rows by stage and reason"),
    ("languages", "Languages before and after curation"),
    ("file_sizes", "File sizes (silver.files)"),
    ("cluster_sizes", "Duplicate-cluster sizes (silver.dup_clusters)"),
    ("task_types", "Samples per task type (gold.samples)"),
    ("sources", "SFT records per source (gold.sft)"),
    ("quality", "Quality scores (gold.sft)"),
    ("lengths", "Record lengths (gold.sft)"),
)


@dataclass
class Figure:
    svg: str | None  # None: not drawn, ``note`` says why
    note: str = ""


def _runs_root(lakehouse: str) -> Path:
    return Path(lakehouse) / "_runs"


def latest_run(lakehouse: str) -> str:
    """The newest run id of a lakehouse (run ids start with their UTC start time)."""
    runs = sorted(p.name for p in _runs_root(lakehouse).glob("*/summary.json")
                  for p in [p.parent])
    if not runs:
        raise FileNotFoundError(f"no runs under {_runs_root(lakehouse)}")
    return runs[-1]


class _Tables:
    """The run's tables at the versions it wrote, read column by column."""

    def __init__(self, lakehouse: str, versions: dict[str, int | None]):
        self.lakehouse, self.versions = lakehouse, versions

    def read(self, name: str, columns: list[str]):
        from deltalake import DeltaTable

        version = self.versions.get(name)
        if version is None:
            return None
        path = Path(self.lakehouse, *name.split("."))
        table = DeltaTable(str(path), version=version)
        have = set(table.schema().to_arrow().names)
        return table.to_pyarrow_table(columns=[c for c in columns if c in have])


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    out = io.StringIO()
    # no date, fixed element ids: the same run gives the same page, byte for byte
    fig.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = out.getvalue()
    return text[text.index("<svg"):]  # without the XML prolog and DOCTYPE, to inline it


def _axes(width: float = 8, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "codemill"
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _bars(labels: list[str], values: list[float], xlabel: str, horizontal: bool = True,
          log: bool = False) -> str:
    fig, ax = _axes(8, max(2.2, 0.32 * len(labels) + 1) if horizontal else 3.6)
    if horizontal:
        ax.barh(labels[::-1], values[::-1], color="#4c72b0")
        ax.set_xlabel(xlabel)
        if log:
            ax.set_xscale("log")
    else:
        ax.bar(labels, values, color="#4c72b0")
        ax.set_ylabel(xlabel)
        ax.tick_params(axis="x", rotation=30)
    return _svg(fig)


def _histogram(values, xlabel: str, log_x: bool = False, log_y: bool = False,
               bins: int = 40) -> str:
    import numpy as np

    values = np.asarray(values, dtype=float)
    fig, ax = _axes()
    if log_x:
        values = values[values > 0]
        edges = np.logspace(np.log10(values.min()), np.log10(values.max() + 1), bins)
        ax.hist(values, bins=edges, color="#4c72b0")
        ax.set_xscale("log")
    else:
        ax.hist(values, bins=bins, color="#4c72b0")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return _svg(fig)


def _counts(table, column: str) -> Counter:
    return Counter(v if v is not None else "(none)" for v in table.column(column).to_pylist())


def _record_lengths(table):
    """(lengths, unit): token counts where build_sft counted them, else characters of content."""
    import numpy as np
    import pyarrow.compute as pc

    tokens = table.column("token_count")
    if tokens.null_count < len(tokens):
        return np.asarray(pc.drop_null(tokens).to_numpy(), dtype=float), "tokens"
    if "chars" in table.column_names:
        return np.asarray(table.column("chars").to_numpy(), dtype=float), "characters"
    # a gold.sft written before build_sft counted characters
    messages = table.column("messages").combine_chunks()
    flat = pc.list_flatten(messages)
    lengths = pc.fill_null(pc.utf8_length(pc.struct_field(flat, "content")), 0).to_numpy()
    parents = pc.list_parent_indices(messages).to_numpy()
    return np.bincount(parents, weights=lengths, minlength=len(messages)), "characters"


def _figures(lakehouse: str, summary: dict) -> dict[str, Figure]:
    versions = {k: v.get("version") for k, v in summary.get("tables", {}).items()}
    t = _Tables(lakehouse, versions)
    stages = summary.get("stages", [])
    figs: dict[str, Figure] = {}

    def missing(*tables: str) -> Figure:
        return Figure(None, f"{' and '.join(tables)}: not written by this run")

    if stages:
        labels = ["input"] + [s["stage"] for s in stages]
        kept = [stages[0]["rows_in"]] + [s["rows_out"] for s in stages]
        figs["funnel"] = Figure(_bars(labels, kept, "rows", horizontal=False))
        drops = sorted(((f"{s['stage']}: {reason}", n) for s in stages
                        for reason, n in s["dropped"].items()), key=lambda kv: -kv[1])[:30]
        figs["drops"] = (Figure(_bars([k for k, _ in drops], [n for _, n in drops], "rows",
                                      log=True)) if drops else Figure(None, "nothing dropped"))
    else:
        figs["funnel"] = figs["drops"] = Figure(None, "no stage ran")

    before, after = t.read("bronze.files", ["language"]), t.read("silver.unique_files",
                                                                   ["language"])
    if before is not None or after is not None:
        b = _counts(before, "language") if before is not None else Counter()
        a = _counts(after, "language") if after is not None else Counter()
        names = sorted(set(b) | set(a), key=lambda k: -(b[k] + a[k]))[:16]
        import numpy as np

        fig, ax = _axes()
        x = np.arange(len(names))
        ax.bar(x - 0.2, [b[n] for n in names], 0.4, label="bronze.files", color="#9aa5b1")
        ax.bar(x + 0.2, [a[n] for n in names], 0.4, label="silver.unique_files",
               color="#4c72b0")
        ax.set_xticks(x, names, rotation=30)
        ax.set_ylabel("files")
        ax.legend(frameon=False)
        figs["languages"] = Figure(_svg(fig))
    else:
        figs["languages"] = missing("bronze.files", "silver.unique_files")

    files = t.read("silver.files", ["size_bytes"])
    figs["file_sizes"] = (Figure(_histogram(files.column("size_bytes").to_numpy(), "bytes",
                                            log_x=True))
                          if files is not None and files.num_rows else missing("silver.files"))
    clusters = t.read("silver.dup_clusters", ["size"])
    figs["cluster_sizes"] = (
        Figure(_histogram(clusters.column("size").to_numpy(), "files per cluster", log_x=True,
                          log_y=True))
        if clusters is not None and clusters.num_rows else missing("silver.dup_clusters"))
    samples = t.read("gold.samples", ["task_type"])
    if samples is not None and samples.num_rows:
        c = _counts(samples, "task_type").most_common()
        figs["task_types"] = Figure(_bars([k for k, _ in c], [n for _, n in c], "samples"))
    else:
        figs["task_types"] = missing("gold.samples")
    sft = t.read("gold.sft", ["source", "quality", "token_count", "chars"])
    if sft is not None and "chars" not in sft.column_names:
        sft = t.read("gold.sft", ["source", "quality", "token_count", "messages"])
    if sft is not None and sft.num_rows:
        # a gold.sft from before the source column held code samples only
        c = (_counts(sft, "source") if "source" in sft.column_names
             else Counter({"code": sft.num_rows})).most_common()
        figs["sources"] = Figure(_bars([k for k, _ in c], [n for _, n in c], "records"))
        figs["quality"] = Figure(_histogram(sft.column("quality").to_numpy(), "quality score",
                                            bins=20))
        lengths, unit = _record_lengths(sft)
        note = "" if unit == "tokens" else "characters of the messages (no sft.tokenizer set)"
        figs["lengths"] = Figure(_histogram(lengths, unit, log_x=True), note)
    else:
        figs["sources"] = figs["quality"] = figs["lengths"] = missing("gold.sft")
    return figs


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#1f2933}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:2em} figure{margin:1em 0}
figcaption{font-weight:600;margin-bottom:.3em} .note{color:#616e7c}
table{border-collapse:collapse;font-size:13px} td,th{border-bottom:1px solid #d9e2ec;
padding:3px 8px;text-align:right} td:first-child,th:first-child{text-align:left}
svg{max-width:100%;height:auto}
"""


def render(lakehouse: str, summary: dict) -> str:
    """The page's HTML for a run's summary."""
    figs = _figures(lakehouse, summary)
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>codemill run "
             f"{e(summary['run_id'])}</title><style>{_STYLE}</style></head><body>",
             f"<h1>codemill run {e(summary['run_id'])}</h1>",
             f"<p>config hash {e(str(summary.get('config_hash')))} · lakehouse "
             f"{e(str(lakehouse))}</p>"]
    for key, title in PLOTS:
        f = figs[key]
        parts.append(f"<figure id='plot-{key}' class='{'plot' if f.svg else 'absent'}'>"
                     f"<figcaption>{e(title)}</figcaption>")
        if f.svg:
            parts.append(f.svg)
        if f.note:
            parts.append(f"<p class='note'>{e(f.note)}</p>")
        parts.append("</figure>")
    cols = ("stage", "rows_in", "rows_out", "rows_dropped", "rows_quarantined", "output_rows",
            "seconds")
    parts.append("<h2>Ledger</h2><table id='ledger'><tr>" + "".join(
        f"<th>{c}</th>" for c in cols) + "</tr>")
    for s in summary.get("stages", []):
        cells = []
        for c in cols:
            v = s.get(c)
            cells.append(f"<td>{e(f'{v:,}' if isinstance(v, int) else str(v))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    tables = summary.get("tables", {})
    parts.append("<h2>Tables</h2><table id='tables'><tr><th>table</th><th>Delta version</th>"
                 "<th>path</th></tr>" + "".join(
                     f"<tr><td>{e(k)}</td><td>{e(str(v.get('version')))}</td>"
                     f"<td>{e(str(v.get('path')))}</td></tr>" for k, v in sorted(tables.items()))
                 + "</table></body></html>")
    return "\n".join(parts)


def write_report(lakehouse: str, run_id: str | None = None) -> Path:
    """Write (or rewrite) ``<lakehouse>/_runs/<run_id>/report.html`` (default: the latest run)
    and return its path. The lakehouse must be on a local or mounted filesystem."""
    run_id = run_id or latest_run(lakehouse)
    folder = _runs_root(lakehouse) / run_id
    summary_path = folder / "summary.json"
    if not summary_path.exists():
        raise FileNotFoundError(f"no run {run_id}: {summary_path} does not exist")
    summary = json.loads(summary_path.read_text())
    out = folder / "report.html"
    out.write_text(render(lakehouse, summary))
    return out
