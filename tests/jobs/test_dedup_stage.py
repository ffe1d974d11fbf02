"""The dedup stage on Spark: exact rows kept, every removal auditable, the same tables twice."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from jobs.dedup import candidates, representatives
from jobs.dedup import sign as signing
from jobs.dedup import verify as verifying
from jobs.lakehouse import Lakehouse
from jobs.runner import run_pipeline
from jobs.schemas import QUARANTINE_SCHEMA, REJECT_SCHEMA
from tests.conftest import make_config
from tests.minhash_reference import content_hash
from udfs.minhash import content_hashes, shingles, tokenize
from udfs.records import file_id

BASE = "def pipeline(alpha, beta):\n" + "".join(
    f"    value_{i} = compute_{i % 7}(alpha_{i}, beta_{i * 3}, gamma={i})\n" for i in range(40))
NEAR = BASE.replace("value_5 =", "renamed_5 =").replace("beta_30,", "delta_30,")
OTHER = "class Parser:\n" + "".join(
    f"    def rule_{i}(self, token_{i}):\n        return self.emit_{i}(token_{i})\n"
    for i in range(20))
SIGNALS = {"num_lines": 40, "alpha_fraction": 0.6, "avg_line_length": 40.0, "max_line_length": 60}


def row(repo, path, text, license="mit", stars=10, **signals):
    return {"id": file_id(repo, path, text.encode()), "repo": repo, "path": path,
            "language": "python", "license": license, "stars": stars, "text": text,
            "size_bytes": len(text.encode()), **{**SIGNALS, **signals}}


ROWS = [
    row("r1", "a.py", BASE, license="mit", stars=10),
    # the same file with CRLF line ends and trailing blanks: an exact duplicate of a.py that keeps
    # a.py as representative although it has more stars, because MIT ranks before Apache-2.0
    row("r2", "a_copy.py", BASE.replace("\n", "  \r\n"), license="apache-2.0", stars=500),
    # two tokens changed: a near duplicate of a.py; both MIT, b.py has more stars and wins
    row("r3", "b.py", NEAR, license="mit", stars=50),
    row("r4", "c.py", OTHER, stars=1),
    row("r4", "c.py", OTHER, stars=1),  # the same row ingested twice
    row("r5", "s1.py", "x = 1"),  # short documents: fewer tokens than the 5-gram
    row("r5", "s2.py", "y = 2"),
    row("r5", "s3.py", "x == 1"),  # the same tokens as s1.py: a duplicate
    row("r6", "e1.py", "{}"),  # no tokens at all: exact deduplication only
    row("r6", "e2.py", "[]"),
]
ID = {r["path"]: r["id"] for r in ROWS}


def write_files(spark, lakehouse, slices: int | None = None, rows: list[dict] = ROWS) -> None:
    """``rows`` (ROWS) as silver.files, in ``slices`` parts (Spark's default if None)."""
    schema = ("id string, repo string, path string, language string, license string, "
              "stars long, text string, size_bytes long, num_lines long, alpha_fraction double, "
              "avg_line_length double, max_line_length long")
    rows = [tuple(r[c.split(" ")[0]] for c in schema.split(", ")) for r in rows]
    df = spark.createDataFrame(spark.sparkContext.parallelize(rows, slices) if slices else rows,
                               schema)
    Lakehouse(spark, lakehouse).write("silver.files", df)


@pytest.fixture
def silver(spark, lakehouse):
    write_files(spark, lakehouse)
    return lakehouse


def table(lakehouse, name):
    return DeltaTable(f"{lakehouse}/{name.replace('.', '/')}").to_pyarrow_table().to_pylist()


def test_exact_and_near_duplicates_with_named_reasons(spark, silver):
    [report] = run_pipeline(make_config(silver), ["dedup"], spark=spark).reports
    assert (report.rows_in, report.rows_out, report.dropped, report.rows_quarantined) == (
        10, 6, {"exact_duplicate": 2, "near_duplicate": 2}, 0)

    kept = sorted(r["path"] for r in table(silver, "silver.unique_files"))
    assert kept == ["b.py", "c.py", "e1.py", "e2.py", "s1.py", "s2.py"]

    rejects = {(r["path"], r["reason"]): json.loads(r["detail"])
               for r in table(silver, "silver.rejects") if r["stage"] == "dedup"}
    a_hash = content_hash(BASE)
    near_ab = min(ID["a.py"], ID["b.py"])
    assert rejects.keys() == {("a_copy.py", "exact_duplicate"), ("c.py", "exact_duplicate"),
                              ("a.py", "near_duplicate"), ("s3.py", "near_duplicate")}
    assert rejects["a_copy.py", "exact_duplicate"] == {
        "kind": "exact", "cluster_id": a_hash, "representative": ID["a.py"]}
    assert rejects["c.py", "exact_duplicate"]["representative"] == ID["c.py"]
    near_a = rejects["a.py", "near_duplicate"]
    assert (near_a["kind"], near_a["cluster_id"], near_a["representative"]) == (
        "near", near_ab, ID["b.py"])
    assert 0.7 <= near_a["jaccard"] < 1.0
    assert rejects["s3.py", "near_duplicate"]["representative"] == ID["s1.py"]
    assert rejects["s3.py", "near_duplicate"]["jaccard"] == 1.0

    clusters = {(c["kind"], c["cluster_id"]): c for c in table(silver, "silver.dup_clusters")}
    assert set(clusters) == {("exact", a_hash), ("exact", content_hash(OTHER)), ("near", near_ab),
                             ("near", min(ID["s1.py"], ID["s3.py"]))}
    exact_a = clusters["exact", a_hash]
    assert (exact_a["members"], exact_a["representative"], exact_a["size"]) == (
        sorted([ID["a.py"], ID["a_copy.py"]]), ID["a.py"], 2)
    assert clusters["exact", content_hash(OTHER)]["members"] == [ID["c.py"], ID["c.py"]]
    near = clusters["near", near_ab]
    assert (near["members"], near["representative"], near["size"]) == (
        sorted([ID["a.py"], ID["b.py"]]), ID["b.py"], 2)
    assert near["min_jaccard"] == near["max_jaccard"] == pytest.approx(near_a["jaccard"], abs=1e-4)


def test_rejects_name_the_file_and_the_text_stays_in_the_pinned_input(spark, silver):
    """By default dedup's rejects carry no text: the ledger pins the silver.files version that
    has it, and a join on id gives every dropped file's text back. rejects_text copies it."""
    # one row per file of the input: without coalescing, each reject would be a file of its own
    write_files(spark, silver, slices=len(ROWS))
    assert len(DeltaTable(f"{silver}/silver/files").file_uris()) == len(ROWS)
    lake = Lakehouse(spark, silver)
    result = run_pipeline(make_config(silver), ["dedup"], spark=spark)
    [report] = result.reports
    version = report.input_versions["silver.files"]
    rejects = lake.read("silver.rejects")[0].where("stage = 'dedup'")
    assert rejects.where("text IS NOT NULL").count() == 0
    files = lake.read("silver.files", version)[0].select("id", "path", "text").distinct()
    back = {(r["path"], r["text"]) for r in rejects.select("id").join(files, "id").collect()}
    by_path = {r["path"]: r["text"] for r in ROWS}
    assert back == {(p, by_path[p]) for p in ("a_copy.py", "c.py", "a.py", "s3.py")}
    # the slice is written in as few files as its size allows (local[2]: no more than 2)
    commit = DeltaTable(f"{silver}/silver/rejects").history(1)[0]
    assert 1 <= int(commit["operationMetrics"]["numFiles"]) <= 2

    run_pipeline(make_config(silver, "dedup.rejects_text=true"), ["dedup"], spark=spark)
    texts = {r["path"]: r["text"] for r in table(silver, "silver.rejects") if r["stage"] == "dedup"}
    assert texts == {p: by_path[p] for p in ("a_copy.py", "c.py", "a.py", "s3.py")}


def test_two_runs_write_identical_tables(spark, silver, tmp_path):
    cfg = make_config(silver)
    run_pipeline(cfg, ["dedup"], spark=spark)
    first = {t: sorted(map(repr, table(silver, t)))
             for t in ("silver.unique_files", "silver.dup_clusters", "silver.rejects")}
    run_pipeline(cfg, ["dedup"], spark=spark)
    second = {t: sorted(map(repr, table(silver, t))) for t in first}
    assert first == second


def test_a_rerun_reuses_the_sessions_generated_code(spark, silver):
    """The session keeps every class Spark generated for a stage (``spark_session``): with
    Spark's default room for 100, the ~200 classes of one dedup run evicted each other and a
    rerun compiled nearly all of them again (and the JIT after them). Nor does a write compile a
    class for its new version: Delta's history(1) did, with the version in the generated code
    (``Lakehouse._latest_commit_from_log``)."""
    metrics = spark._jvm.org.apache.spark.metrics.source.CodegenMetrics
    cfg = make_config(silver)
    for _ in range(2):  # the first run creates the tables, the second overwrites them
        run_pipeline(cfg, ["dedup"], spark=spark)
    before = metrics.METRIC_COMPILATION_TIME().getCount()
    run_pipeline(cfg, ["dedup"], spark=spark)
    assert metrics.METRIC_COMPILATION_TIME().getCount() - before == 0


def test_exact_only_signature_verification_and_explicit_banding(spark, silver):
    [report] = run_pipeline(make_config(silver, "dedup.near=false"), ["dedup"],
                            spark=spark).reports
    assert report.dropped == {"exact_duplicate": 2}
    [report] = run_pipeline(make_config(silver, "dedup.verify=signature"), ["dedup"],
                            spark=spark).reports
    assert report.dropped == {"exact_duplicate": 2, "near_duplicate": 2}
    # one band of 256 rows: only identical signatures collide (s1/s3), a/b no longer do
    [report] = run_pipeline(make_config(silver, "dedup.bands=1", "dedup.rows=256"), ["dedup"],
                            spark=spark).reports
    assert report.dropped == {"exact_duplicate": 2, "near_duplicate": 1}


def test_a_file_that_fails_to_hash_is_quarantined_not_fatal(monkeypatch):
    def fragile(data, offsets):
        if b"boom" in data[offsets[0]:offsets[-1]].tobytes():
            raise ValueError("cannot hash this")
        return content_hashes(data, offsets)

    monkeypatch.setattr(signing, "content_hashes", fragile)
    names = [c.split(" ")[0] for c in signing.SIGNED_SCHEMA.split(", ")]
    rows = [row("r", "ok.py", BASE), row("r", "bad.py", "boom = 1")]
    batch = pa.RecordBatch.from_pylist(rows)
    out = list(signing.sign_batches(make_config("unused").dedup, _signed_schema(names))(iter([batch])))
    got = out[0].to_pylist()
    assert [r["_error"] for r in got] == [None, "hash_error: ValueError: cannot hash this"]
    assert got[0]["content_hash"] == content_hash(BASE) and len(got[0]["signature"]) == 1024
    assert got[1]["content_hash"] is None and got[1]["signature"] is None
    assert "text" not in out[0].schema.names


def _signed_schema(names):
    types = {"id": pa.string(), "repo": pa.string(), "path": pa.string(),
             "language": pa.string(), "license": pa.string(), "stars": pa.int64(),
             "size_bytes": pa.int64(), "num_lines": pa.int64(), "alpha_fraction": pa.float64(),
             "avg_line_length": pa.float64(), "max_line_length": pa.int64(),
             "content_hash": pa.string(), "signature": pa.binary(), "shingles": pa.int64(),
             "_error": pa.string()}
    return pa.schema([pa.field(n, types[n]) for n in names])


def test_shingle_sets_function_gives_each_files_distinct_sorted_hashes():
    texts = [BASE, "", OTHER + OTHER]  # OTHER twice: its repeated shingles count once
    batch = pa.RecordBatch.from_pylist([{"id": str(i), "text": t} for i, t in enumerate(texts)])
    schema = pa.schema([("id", pa.string()), ("shingle_set", pa.binary())])
    [out] = list(verifying.shingle_set_batches(make_config("unused").dedup, schema)(iter([batch])))
    got = out.to_pylist()
    assert [r["id"] for r in got] == ["0", "1", "2"]
    for r, text in zip(got, texts):
        values = np.frombuffer(r["shingle_set"], dtype="<u4")
        assert np.all(np.diff(values.astype(np.int64)) > 0)  # sorted and distinct
        assert len(values) == len(set(shingles(tokenize(text), 5)))
    # with the ids wanted, only their rows (a direct read of the files hands it every row)
    wanted = verifying.shingle_set_batches(make_config("unused").dedup, schema, ["2", "0", "9"])
    [kept] = list(wanted(iter([batch])))
    assert kept.to_pylist() == [got[0], got[2]]


def _sig(equal_to: np.ndarray | None, same: int) -> bytes:
    """A signature that agrees with ``equal_to`` in exactly ``same`` of 256 positions."""
    base = np.arange(256, dtype="<u4") + 1000
    if equal_to is None:
        return base.tobytes()
    out = equal_to.copy()
    out[same:] += 1
    return out.tobytes()


@pytest.mark.parametrize("one_task", [True, False])
def test_estimates_decide_far_from_the_threshold_and_exact_sets_near_it(spark, one_task):
    """Signatures are forged so the estimate and the texts disagree: an edge whose estimate is
    within verify_margin of 0.7 must be decided by the texts, any other by the estimate."""
    base = np.frombuffer(_sig(None, 0), dtype="<u4")
    reps = spark.createDataFrame([
        ("a", _sig(None, 0)),
        ("b", _sig(base, 192)),  # estimate 0.75 vs a, texts unrelated: exact check drops it
        ("c", _sig(base, 128)),  # estimate 0.50 vs a, texts equal: outside the margin, dropped
        ("d", _sig(base, 243)),  # estimate 0.95 vs a, texts unrelated: outside, kept
        ("e", _sig(base, 166)),  # estimate 0.65 vs a, texts equal: exact check keeps it
    ], "id string, signature binary")
    files = spark.createDataFrame(
        [("a", BASE), ("b", OTHER), ("c", BASE), ("d", OTHER), ("e", BASE), ("a", BASE)],
        "id string, text string")  # "a" twice: one id ingested twice
    edges = spark.createDataFrame([(x, "a") for x in "bcde"], "src string, dst string")

    def kept(*overrides):
        d = make_config("unused", *overrides).dedup
        scored = verifying.estimated(edges, reps, d)
        return sorted(r["src"] for r in verifying.verified(scored, files, d, one_task).collect())

    assert kept() == ["d", "e"]
    assert kept("dedup.verify_margin=0") == ["b", "d"]  # the estimate alone
    assert kept("dedup.verify=signature") == ["b", "d"]
    assert kept("dedup.verify_margin=1") == ["c", "e"]  # every edge exact


@pytest.mark.parametrize("verify", ["exact", "none"])
def test_one_task_and_distributed_banding_propose_the_same_scored_pairs(spark, verify):
    rng = np.random.default_rng(11)
    sigs = rng.integers(0, 2**32, (200, 24), dtype=np.uint32)
    sigs[1] = sigs[0]
    sigs[7, :6] = sigs[3, :6]
    sigs[20:90, 18:24] = sigs[10, 18:24]  # a bucket of 71 files: larger than all_pairs_bucket
    sigs[40, 6:12] = sigs[41, 6:12] = sigs[42, 6:12]
    ids = [f"{int(x):08x}" for x in rng.permutation(10**6)[:200]]  # ids not in row order
    reps = spark.createDataFrame([(i, s.astype("<u4").tobytes()) for i, s in zip(ids, sigs)],
                                 "id string, signature binary")
    d = make_config("unused", "dedup.num_perm=24", "dedup.bands=4", "dedup.rows=6",
                    f"dedup.verify={verify}").dedup

    def rows(df):
        return sorted((r["src"], r["dst"], round(r["jaccard"], 9)) for r in df.collect())

    one_task = rows(candidates.in_one_task(reps, d))
    distributed = rows(verifying.estimated(candidates.distributed(reps, d), reps, d))
    assert one_task == distributed
    assert all(src > dst for src, dst, _ in one_task)
    pairs = {(s, t) for s, t, _ in one_task}
    assert (max(ids[0], ids[1]), min(ids[0], ids[1])) in pairs
    big = sorted(ids[i] for i in [10, *range(20, 90)])
    # the 71-file bucket: a star to its smallest id with verify=none and with exact alike
    # (71 > all_pairs_bucket = 64), so two of its larger members are never paired by it
    assert all((y, big[0]) in pairs for y in big[1:])
    assert (big[2], big[1]) not in pairs


def test_one_task_and_distributed_members_pick_the_same_representatives(spark):
    """Clusters whose files tie on every rank key but one, with nulls where Spark puts them last,
    non-ASCII paths (byte order) and a chain: the one task and the window agree row for row."""
    rng = np.random.default_rng(5)
    base = rng.integers(0, 2**32, 16, dtype=np.uint32)

    def sig(k):  # agrees with base in 16 - k positions
        out = base.copy()
        out[:k] += 1
        return out.astype("<u4").tobytes()

    # id, license rank, stars, alpha_fraction, max_line_length, path, repo
    files = [
        ("a1", 0, 10, 0.5, 80, "x.py", "r"), ("a2", 0, 10, 0.5, 80, "x.py", "q"),  # repo decides
        ("a3", 0, None, 0.9, 10, "a.py", "a"),  # no stars: last however good the rest
        ("b1", 1, 5, None, 50, "p", "r"), ("b2", 1, 5, 0.1, 50, "p", "r"),  # alpha: null last
        ("b3", 0, 1, 0.1, 90, "p", "r"),  # the most permissive license wins before stars
        ("c1", 2, 3, 0.4, None, "a.py", "r"), ("c2", 2, 3, 0.4, None, "b.py", "r"),
        ("c3", 2, 3, 0.4, 70, "zz.py", "r"),  # a line length beats none
        ("f1", 0, 1, 0.3, 40, "é.py", "r"), ("f2", 0, 1, 0.3, 40, "z.py", "r"),  # bytes: é > z
        ("d1", 3, 7, 0.4, 40, None, "r"), ("d2", 3, 7, 0.4, 40, "m.py", None),  # path nulls last
        ("e1", 0, 1, 0.3, 40, "same", "same"), ("e0", 0, 1, 0.3, 40, "same", "same"),  # id
        ("lone", 0, 1, 0.3, 40, "l", "l"),  # in no edge: no member
    ]
    reps = spark.createDataFrame(
        [(i, sig(k % 5), *rest) for k, (i, *rest) in enumerate(files)],
        "id string, signature binary, _license_rank int, stars long, alpha_fraction double, "
        "max_line_length long, path string, repo string")
    edges = spark.createDataFrame(
        [("a2", "a1"), ("a3", "a2"), ("b2", "b1"), ("b3", "b2"), ("c2", "c1"), ("c3", "c1"),
         ("d2", "d1"), ("e1", "e0"), ("e1", "e1"), ("f2", "f1")], "src string, dst string")
    d = make_config("unused", "dedup.num_perm=16").dedup

    def rows(df):
        return sorted((r["id"], r["cluster_id"], r["representative"], round(r["jaccard"], 9))
                      for r in df.collect())

    one_task = rows(representatives.in_one_task(edges, reps, d))
    assert one_task == rows(representatives.distributed(edges, reps, d)[0])
    assert {i: rep for i, _, rep, _ in one_task} == {
        "a1": "a2", "a2": "a2", "a3": "a2", "b1": "b3", "b2": "b3", "b3": "b3",
        "c1": "c3", "c2": "c3", "c3": "c3", "d1": "d2", "d2": "d2", "e0": "e0", "e1": "e0",
        "f1": "f2", "f2": "f2"}
    assert {c for _, c, _, _ in one_task} == {"a1", "b1", "c1", "d1", "e0", "f1"}
    # no signed file at all (every file an exact duplicate or without tokens): no member
    assert representatives.in_one_task(edges.limit(0), reps.limit(0), d).collect() == []


def test_one_task_and_distributed_banding_write_identical_tables(spark, silver):
    def tables(*overrides):
        run_pipeline(make_config(silver, *overrides), ["dedup"], spark=spark)
        return {t: sorted(map(repr, table(silver, t)))
                for t in ("silver.unique_files", "silver.dup_clusters", "silver.rejects")}

    assert tables() == tables("dedup.tuning.one_task_files=0")


def test_the_tasks_read_silver_files_themselves_and_write_the_same_tables(spark, lakehouse,
                                                                           monkeypatch):
    """``dedup.tuning.direct_reads``: the signing pass and the exact verification read silver.files'
    Parquet files in the Python tasks; the tables are the ones Spark's scan gives."""
    write_files(spark, lakehouse, slices=3)
    calls = []
    real = signing.map_parquet_in_arrow

    def recording(spark, tasks, schema, fn, out_schema):
        calls.append((sum(map(len, tasks)), out_schema))
        return real(spark, tasks, schema, fn, out_schema)

    for step in (signing, verifying):  # the two steps that read the text
        monkeypatch.setattr(step, "map_parquet_in_arrow", recording)

    def tables(*overrides):
        run_pipeline(make_config(lakehouse, *overrides), ["dedup"], spark=spark)
        return {t: sorted(map(repr, table(lakehouse, t)))
                for t in ("silver.unique_files", "silver.dup_clusters", "silver.rejects")}

    direct = tables("dedup.verify_margin=1.0")  # every candidate pair's Jaccard from the text
    files = len(DeltaTable(f"{lakehouse}/silver/files").file_uris())
    assert files > 1
    assert calls == [(files, signing.SIGNED_SCHEMA), (files, "id string, shingle_set binary")]
    calls.clear()
    assert tables("dedup.verify_margin=1.0", "dedup.tuning.direct_reads=false") == direct
    assert calls == []


def test_the_tasks_write_the_stage_tables_and_delta_rs_commits_them(spark, lakehouse):
    """``dedup.tuning.direct_writes``: once the tables exist, the Python tasks write silver.unique_files,
    silver.dup_clusters and dedup's slice of silver.rejects, and the driver commits each with
    delta-rs: the rows Spark's writes give, one commit each, and the ledger counts them. Tables
    not created yet, ``direct_writes=false``, or (silver.unique_files) an id ingested twice:
    Spark writes them."""
    ours = "codemill overwrite_files (delta-rs)"
    tables = ("silver.unique_files", "silver.dup_clusters", "silver.rejects")

    def engines():
        found = {}
        for name in tables:
            last = DeltaTable(f"{lakehouse}/{name.replace('.', '/')}").history(1)[0]
            found[name] = last.get("engine") or last["engineInfo"].split("/")[0]
        return found

    def run(*overrides):
        [report] = run_pipeline(make_config(lakehouse, *overrides), ["dedup"], spark=spark).reports
        return report, {t: sorted(map(repr, table(lakehouse, t))) for t in tables}

    Lakehouse(spark, lakehouse).write(  # another stage's slice, which stays as it is
        "silver.rejects", spark.createDataFrame([("filter", "too_long", "f1", "r", "x.py", "python",
                                                  "mit", 1, None, 1, None)], REJECT_SCHEMA),
        replace_where="stage = 'filter'")
    once = [r for i, r in enumerate(ROWS) if i != 4]  # c.py ingested once
    write_files(spark, lakehouse, slices=3, rows=once)
    _, by_spark = run()
    # created by Spark; silver.rejects existed (the filter slice): dedup's slice is written by
    # the tasks from the first run
    assert engines() == {"silver.unique_files": "Apache-Spark",
                         "silver.dup_clusters": "Apache-Spark", "silver.rejects": ours}
    report, direct = run()
    assert engines() == dict.fromkeys(tables, ours)
    assert direct == by_spark
    assert sum("'filter'" in r for r in direct["silver.rejects"]) == 1
    path = f"{lakehouse}/silver/unique_files"
    assert report.output_rows == report.rows_out == 6
    assert report.output_versions == {t: DeltaTable(f"{lakehouse}/{t.replace('.', '/')}").version()
                                      for t in (*tables, "ops.quarantine")}
    assert sorted(map(repr, spark.read.format("delta").load(path).collect())) == sorted(
        map(repr, spark.read.format("delta").option("versionAsOf", DeltaTable(path).version() - 1)
            .load(path).collect()))
    _, again = run("dedup.tuning.direct_writes=false")
    assert engines() == dict.fromkeys(tables, "Apache-Spark") and again == direct
    write_files(spark, lakehouse, slices=3)  # c.py twice: the copies are ranked in Spark's join
    run()
    assert engines()["silver.unique_files"] == "Apache-Spark"
    assert engines()["silver.dup_clusters"] == ours


def test_an_empty_quarantine_slice_is_not_written_again(spark, silver):
    """Nothing quarantined and nothing of the stage's in ops.quarantine: the slice stays as it
    is, without a write, and the ledger records the table's version. A slice with rows from an
    earlier run is still replaced by the empty one."""
    lake = Lakehouse(spark, silver)
    old = spark.createDataFrame([("dedup", "silver.files", "r/x.py", "boom", "hash_error: old")],
                                QUARANTINE_SCHEMA)
    lake.write("ops.quarantine", old, replace_where="stage = 'dedup'")
    assert lake.empty_slice_version("ops.quarantine", "stage", "dedup") is None
    assert lake.empty_slice_version("ops.quarantine", "stage", "filter") == 0
    assert lake.empty_slice_version("silver.files", "stage", "dedup") is None  # not partitioned
    assert lake.empty_slice_version("ops.nothing", "stage", "dedup") is None  # no such table

    [first] = run_pipeline(make_config(silver), ["dedup"], spark=spark).reports
    assert [r for r in table(silver, "ops.quarantine") if r["stage"] == "dedup"] == []
    assert first.output_versions["ops.quarantine"] == 1  # the old row's slice was replaced
    [second] = run_pipeline(make_config(silver), ["dedup"], spark=spark).reports
    assert second.output_versions["ops.quarantine"] == 1
    assert DeltaTable(f"{silver}/ops/quarantine").version() == 1  # no commit
    assert second.output_versions["silver.rejects"] > first.output_versions["silver.rejects"]
