"""jobs.schemas' declarations and the contract the runner enforces with them; table checksums."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from pyspark.sql import types as T

from jobs import registry
from jobs.catalog import table_checksum
from jobs.runner import SchemaContractError, run_pipeline
from jobs.schemas import TABLE_SCHEMAS, TABLES, columns, schema_mismatch
from tests.conftest import make_config


def test_every_table_is_declared_and_nested_types_parse():
    assert set(TABLE_SCHEMAS) == set(TABLES)
    assert columns("a long, b map<string,array<long>>, c struct<x:int,y:string>, d integer") == [
        ("a", "bigint"), ("b", "map<string,array<bigint>>"), ("c", "struct<x:int,y:string>"),
        ("d", "int")]


def test_mismatches_name_the_columns():
    ok = T.StructType([T.StructField("kind", T.StringType()), T.StructField("cluster_id", T.StringType()),
                       T.StructField("representative", T.StringType()),
                       T.StructField("members", T.ArrayType(T.StringType())),
                       T.StructField("size", T.LongType()), T.StructField("max_jaccard", T.DoubleType()),
                       T.StructField("min_jaccard", T.DoubleType())])
    assert schema_mismatch("silver.dup_clusters", ok) is None
    assert schema_mismatch("not.declared", ok) is None
    retyped = T.StructType([*ok.fields[:4], T.StructField("size", T.IntegerType()), *ok.fields[5:]])
    assert "missing or retyped: size bigint" in schema_mismatch("silver.dup_clusters", retyped)
    assert "not declared: size int" in schema_mismatch("silver.dup_clusters", retyped)
    swapped = T.StructType([ok.fields[1], ok.fields[0], *ok.fields[2:]])
    assert "column order" in schema_mismatch("silver.dup_clusters", swapped)


def test_a_stage_whose_output_drifts_fails_before_it_writes(spark, lakehouse, tmp_path,
                                                             monkeypatch):
    """ingest renaming a column: the run stops naming it, and no table exists afterwards."""
    (tmp_path / "tree" / "repo").mkdir(parents=True)
    (tmp_path / "tree" / "repo" / "a.py").write_text("x = 1\n")
    real = registry.STAGES["ingest"]

    def drifting(spark, cfg, inputs):
        result = real.build(spark, cfg, inputs)
        result.decided = result.decided.withColumnRenamed("license", "licence")
        result.kept_columns = tuple("licence" if c == "license" else c
                                    for c in result.kept_columns)
        return result

    monkeypatch.setitem(registry.STAGES, "ingest", replace(real, build=drifting))
    cfg = make_config(lakehouse, f"ingest.sources=[{{kind: tree, path: '{tmp_path / 'tree'}'}}]")
    with pytest.raises(SchemaContractError, match="bronze.files .*missing or retyped: license "
                                                  "string; not declared: licence string"):
        run_pipeline(cfg, ["ingest"], spark=spark)
    assert not list(Path(lakehouse).glob("*/*/_delta_log"))


def test_checksums_ignore_row_order_and_files_but_not_content(tmp_path):
    rows = [{"id": str(i), "n": i, "tags": [f"t{i}"]} for i in range(50)]
    write_deltalake(str(tmp_path / "a" / "x" / "t"), pa.Table.from_pylist(rows))
    for k in range(5):  # the same rows reversed, in five files
        part = pa.Table.from_pylist(rows[::-1][k * 10:(k + 1) * 10])
        write_deltalake(str(tmp_path / "b" / "x" / "t"), part, mode="append")
    changed = [*rows[:-1], {**rows[-1], "n": 0}]
    write_deltalake(str(tmp_path / "c" / "x" / "t"), pa.Table.from_pylist(changed))
    a, b, c = (table_checksum(str(tmp_path / root), "x.t") for root in "abc")
    assert a["rows"] == b["rows"] == c["rows"] == 50
    assert a["sha256"] == b["sha256"] != c["sha256"]
    assert (b["version"], a["version"]) == (4, 0)
    # without the changed column the third table is the same content
    assert table_checksum(str(tmp_path / "c"), "x.t", exclude=("n",))["sha256"] == \
        table_checksum(str(tmp_path / "a"), "x.t", exclude=("n",))["sha256"]
