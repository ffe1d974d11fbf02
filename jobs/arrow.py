"""Arrow between the driver, the JVM and the Python tasks: schemas from Spark DDL, and small
driver-side tables handed to Spark as Arrow."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def arrow_schema(ddl: str):
    """The Arrow schema of a Spark DDL string, for a mapInArrow function to yield.

    Computed on the driver (parsing DDL needs the JVM) and captured by the function's closure.
    """
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import _parse_datatype_string

    return to_arrow_schema(_parse_datatype_string(ddl))


def local_frame(spark: SparkSession, rows: list[dict], ddl: str) -> DataFrame:
    """A DataFrame of rows held on the driver (dicts by column name; missing keys are null),
    built by the JVM from one Arrow table.

    ``createDataFrame`` of a Python list pickles the rows into an RDD whose tasks run in Python
    workers of a second daemon, which has none of ``jobs.pyworker``'s zip importers, and costs a
    Python job where the JVM alone would do. The schema is given as well: a Spark Connect client
    cannot take it from an Arrow table without rows.
    """
    import pyarrow as pa

    return spark.createDataFrame(pa.Table.from_pylist(rows, schema=arrow_schema(ddl)), schema=ddl)
