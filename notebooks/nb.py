"""What the notebooks share: their parameters and how they show things, on Databricks and as
plain Python.

On Databricks a notebook's parameters are widgets (``dbutils.widgets``), its session is the
cluster's, and ``display()`` draws tables and figures. Run locally (``python
notebooks/run.py``), a parameter comes from its environment variable (``CODEMILL_LAKEHOUSE``,
``CODEMILL_RUN``, …) or its default, the session is codemill's own (``jobs.session``), tables are
printed, and figures are saved as PNG under ``CODEMILL_NOTEBOOK_OUT`` (default
``notebooks/out/``, which git ignores).
"""

from __future__ import annotations

import builtins
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # a checkout: jobs/ and udfs/ beside notebooks/
    sys.path.insert(0, str(ROOT))


def _notebook_global(name: str):
    """``dbutils`` / ``display`` as a Databricks notebook has them: in the IPython namespace the
    notebook runs in (builtins as a fallback), None when run as a plain script."""
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = None
    shell = get_ipython() if get_ipython else None
    if shell is not None and name in shell.user_ns:
        return shell.user_ns[name]
    return getattr(builtins, name, None)


def widget(name: str, default: str, label: str | None = None) -> str:
    """A text widget on Databricks; locally ``CODEMILL_<NAME>`` or ``default``."""
    dbutils = _notebook_global("dbutils")
    if dbutils is not None:
        dbutils.widgets.text(name, default, label or name)
        return dbutils.widgets.get(name) or default
    return os.environ.get(f"CODEMILL_{name.upper()}", default)


def spark_session(lakehouse: str):
    """The notebook's Spark session: the active one (Databricks), else codemill's local one."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    from jobs.config import load_config
    from jobs.session import spark_session as make

    return make(load_config(env="local", overrides=[f"lakehouse={lakehouse}"]).spark)


_shown = 0


def show(obj, name: str | None = None, rows: int = 20) -> None:
    """``display()`` on Databricks; locally print a DataFrame (Spark or pandas) or save a figure."""
    global _shown
    display = _notebook_global("display")
    if display is not None:
        display(obj)
        return
    if hasattr(obj, "savefig"):  # a matplotlib figure
        _shown += 1
        out = Path(os.environ.get("CODEMILL_NOTEBOOK_OUT", ROOT / "notebooks" / "out"))
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{Path(sys.argv[0]).stem}-{_shown:02d}-{name or 'figure'}.png"
        obj.savefig(path, dpi=80, bbox_inches="tight")
        print(f"[figure] {path}")
    elif hasattr(obj, "show") and hasattr(obj, "schema"):  # a Spark DataFrame
        obj.show(rows, truncate=80)
    else:
        print(obj.to_string() if hasattr(obj, "to_string") else obj)


def figure(width: float = 8, height: float = 3.5):
    import matplotlib

    if _notebook_global("display") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))
