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


def test_check_constraints_refuse_a_violating_row_and_survive_overwrites(spark, lakehouse):
    from jobs.arrow import local_frame
    from jobs.lakehouse import Lakehouse
    from jobs.ledger import LEDGER_FIELDS

    lake = Lakehouse(spark, lakehouse)
    ddl = ", ".join(f"{n} {kind}" for n, kind in LEDGER_FIELDS)

    def row(rows_in, rows_out, run="r1"):
        return {"run_id": run, "stage": "ingest", "rows_in": rows_in, "rows_out": rows_out,
                "rows_dropped": 1, "dropped": {"blank_line": 1}, "rows_quarantined": 0,
                "bytes_in": 1, "bytes_out": 1, "seconds": 0.1, "config_hash": "x",
                "input_versions": {}, "output_versions": {}, "dry_run": False, "output_rows": 1}

    lake.write("ops.ledger", local_frame(spark, [row(3, 2)], ddl), append=True)
    properties = {r["key"]: r["value"] for r in spark.sql(
        f"SHOW TBLPROPERTIES delta.`{lake.path('ops.ledger')}`").collect()}
    assert properties["delta.constraints.rows_balance"] == (
        "rows_in = rows_out + rows_dropped + rows_quarantined")
    with pytest.raises(Exception, match="(?i)rows_balance"):  # 5 ≠ 2 + 1 + 0
        lake.write("ops.ledger", local_frame(spark, [row(5, 2, "r2")], ddl), append=True)
    fresh = Lakehouse(spark, lakehouse)  # another run: nothing cached
    fresh.write("ops.ledger", local_frame(spark, [row(4, 3, "r3")], ddl))  # an overwrite
    with pytest.raises(Exception, match="(?i)rows_balance"):
        fresh.write("ops.ledger", local_frame(spark, [row(9, 1, "r4")], ddl))
    got = spark.read.format("delta").load(lake.path("ops.ledger")).select("run_id").collect()
    assert [r["run_id"] for r in got] == ["r3"]
