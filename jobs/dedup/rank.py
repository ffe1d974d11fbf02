"""The representative rule, written once: which file of a cluster (exact or near) is kept.

Most permissive license first (``udfs.licenses.PERMISSIVENESS``), then most stars, then the
quality signals the filter computed (higher ``alpha_fraction``, then shorter
``max_line_length``), then ``path``, ``repo`` and ``id`` in ascending order, so ties always break
the same way. ``RANK`` is that list; ``spark_order`` and ``arrow_sort_keys`` read it, so a window
over a cluster and an Arrow sort of its rows pick the same file: both put nulls last (Spark's
``*_nulls_last``, Arrow's default placement), compare strings as UTF-8 bytes, and
``alpha_fraction`` is never NaN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from udfs.licenses import PERMISSIVENESS, permissiveness_rank

if TYPE_CHECKING:
    from pyspark.sql import Column

# (column, ascending); ``_license_rank`` is ``license_rank()`` of the file's license
RANK: tuple[tuple[str, bool], ...] = (
    ("_license_rank", True), ("stars", False), ("alpha_fraction", False),
    ("max_line_length", True), ("path", True), ("repo", True), ("id", True))
# the file columns the rule reads (``_license_rank`` comes from ``license``)
RANK_COLUMNS = ("license",) + tuple(c for c, _ in RANK[1:-1])


def spark_order() -> list[Column]:
    """``RANK`` as a window ordering."""
    from pyspark.sql import functions as F

    return [F.col(c).asc_nulls_last() if up else F.col(c).desc_nulls_last() for c, up in RANK]


def arrow_sort_keys() -> list[tuple[str, str]]:
    """``RANK`` as ``pyarrow.compute.sort_indices`` keys (nulls last, Arrow's default)."""
    return [(c, "ascending" if up else "descending") for c, up in RANK]


def license_rank(col: str = "license") -> Column:
    """``udfs.licenses.permissiveness_rank`` as a Spark expression (no Python UDF)."""
    from itertools import chain

    from pyspark.sql import functions as F

    ranks = {spdx: permissiveness_rank(spdx) for group in PERMISSIVENESS for spdx in group}
    table = F.create_map(*chain.from_iterable((F.lit(k), F.lit(v)) for k, v in ranks.items()))
    return (F.when(F.col(col).isNull(), F.lit(permissiveness_rank(None)))
            .otherwise(F.coalesce(table[F.col(col)], F.lit(len(PERMISSIVENESS)))))
