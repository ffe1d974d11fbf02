"""The Spark session every stage runs in, and the Delta Lake jars it needs.

``spark_session`` is the one factory (local, local-cluster, spark-submit, Databricks);
``resolve_delta_jars`` gets Delta's jars from Maven Central through conf/jars/pom.xml;
``build_code_zip`` ships ``jobs`` and ``udfs`` to executors that do not have them installed.
"""

from __future__ import annotations

import atexit
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.config import REPO_ROOT, ConfigError, SparkSettings
from udfs.settings import conf_dir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

POM = conf_dir() / "jars" / "pom.xml"
POOLS = conf_dir() / "fairscheduler.xml"  # one scheduler pool per table


def resolve_delta_jars(jars_dir: str | Path) -> list[str]:
    """Jars of Delta Lake resolved by Maven from conf/jars/pom.xml into ``jars_dir`` (cached).

    The folder carries a stamp with the pom's hash, so editing the pom re-resolves. Maven writes to a
    temporary folder first, so an interrupted resolve never leaves a half-filled cache.
    """
    target = _jars_folder(jars_dir)
    want = hashlib.sha256(POM.read_bytes()).hexdigest()
    stamp = target / ".pom-sha256"
    if not (stamp.exists() and stamp.read_text().strip() == want):
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError(
                "spark.delta_jars=maven needs Maven (mvn) on PATH; install it, or set "
                "spark.delta_jars=packages to let Spark fetch io.delta:delta-spark itself"
            )
        tmp = Path(tempfile.mkdtemp(prefix=".jars-", dir=target.parent))
        cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={tmp}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"Maven could not resolve Delta jars:\n{done.stdout}{done.stderr}")
        (tmp / ".pom-sha256").write_text(want)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    jars = sorted(glob.glob(str(target / "*.jar")))
    if not jars:
        raise RuntimeError(f"no jars in {target}; delete it to resolve again")
    return jars


def _delta_on_classpath() -> bool:
    home = os.environ.get("SPARK_HOME") or str(Path(__import__("pyspark").__file__).parent)
    return bool(glob.glob(os.path.join(home, "jars", "delta-spark*.jar"))) or (
        "DATABRICKS_RUNTIME_VERSION" in os.environ
    )


def _jars_folder(jars_dir: str | Path) -> Path:
    target = Path(jars_dir)
    return target if target.is_absolute() else REPO_ROOT / target


def _jars_cached(jars_dir: str | Path) -> bool:
    """Whether ``jars_dir`` holds the jars of the current pom (``resolve_delta_jars``' stamp)."""
    stamp = _jars_folder(jars_dir) / ".pom-sha256"
    want = hashlib.sha256(POM.read_bytes()).hexdigest()
    return stamp.exists() and stamp.read_text().strip() == want


def delta_jars_mode(settings: SparkSettings) -> str:
    """Resolve ``auto`` to provided / maven / packages (see ``SparkSettings.delta_jars``): jars
    resolved earlier are used without Maven."""
    if settings.delta_jars != "auto":
        return settings.delta_jars
    if _delta_on_classpath() or "PYSPARK_GATEWAY_PORT" in os.environ:
        # Under spark-submit the JVM is already up: jars must come from --packages/--jars.
        return "provided"
    return "maven" if shutil.which("mvn") or _jars_cached(settings.jars_dir) else "packages"


class EnvironmentProblem(ConfigError):
    """The machine lacks what the run needs (Java, Delta's jars, a writable lakehouse); the
    message names the cause and the fix."""


def check_environment(settings: SparkSettings, lakehouse: str, writes: bool = True) -> None:
    """Before Spark starts: raise EnvironmentProblem for what would otherwise fail deep inside
    the JVM's start or the first write, with a Java stack trace instead of a cause."""
    starts_jvm = "PYSPARK_GATEWAY_PORT" not in os.environ and not (
        settings.master or "").startswith("sc://")
    if starts_jvm:
        java_home = os.environ.get("JAVA_HOME")
        if not (java_home and Path(java_home, "bin", "java").exists()) and not shutil.which(
                "java"):
            raise EnvironmentProblem(
                "Java not found: Spark needs a Java 17 or 21 runtime on PATH or in JAVA_HOME "
                "(Debian/Ubuntu: apt install openjdk-17-jre-headless)")
        if (delta_jars_mode(settings) == "maven" and not _jars_cached(settings.jars_dir)
                and not shutil.which("mvn")):
            raise EnvironmentProblem(
                f"spark.delta_jars=maven: no Delta jars in {_jars_folder(settings.jars_dir)} and "
                "no Maven (mvn) to resolve them; install Maven (apt install maven), or set "
                "spark.delta_jars=packages to let Spark fetch io.delta:delta-spark itself")
    if writes and "://" not in lakehouse and not lakehouse.startswith(("dbfs:", "file:")):
        root = Path(lakehouse)
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = Path(tempfile.mkstemp(prefix=".codemill-probe-", dir=root)[1])
            probe.unlink()
        except OSError as exc:
            raise EnvironmentProblem(
                f"lakehouse: cannot write to {lakehouse} ({exc.strerror}); choose another with "
                "--set lakehouse=PATH") from None


def build_code_zip() -> str:
    """Zip the ``jobs`` and ``udfs`` packages for executors' Python path (deterministic order).

    The zip lives in a temporary folder that is removed when this process exits: executors fetch
    it from the driver while the session runs, and each driver builds its own.
    """
    folder = tempfile.mkdtemp(prefix="codemill-code-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    out = Path(folder) / "codemill_code.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in ("jobs", "udfs"):
            for path in sorted((REPO_ROOT / package).rglob("*.py")):
                zf.write(path, path.relative_to(REPO_ROOT).as_posix())
    return str(out)


def is_connect(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect client session (``sc://``): no SparkContext, no JVM
    in this process, only DataFrame plans and SQL sent to the server."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


_PARALLELISM: dict[int, int] = {}


def default_parallelism(spark: SparkSession) -> int:
    """The cluster's ``defaultParallelism`` (its cores, on a local or standalone master). A
    Connect client has no SparkContext to ask, so it counts the partitions of a range, which the
    server splits into exactly that many (``spark.sql.leafNodeDefaultParallelism`` unset); one
    small job per session."""
    if not is_connect(spark):
        return spark.sparkContext.defaultParallelism
    key = id(spark)
    if key not in _PARALLELISM:
        from pyspark.sql import functions as F

        parts = spark.range(0, 1 << 16).select(F.spark_partition_id().alias("p"))
        _PARALLELISM[key] = max(1, parts.distinct().count())
    return _PARALLELISM[key]


def _connect_session(settings: SparkSettings, runtime: dict[str, str]) -> SparkSession:
    """A Spark Connect client session on ``settings.master`` (``sc://host:port``). The server
    was started with its own master, jars and static settings (Delta's extension and catalog:
    README, "Spark Connect"); only the SQL settings a session may change are sent. The code zip
    goes to the server as a Python artifact, on the path of that session's Python workers."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.remote(settings.master)
    for key, value in {**runtime, **settings.conf}.items():
        if key.startswith("spark.sql."):
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if settings.ship_code is not False:
        spark.addArtifacts(build_code_zip(), pyfile=True)
    return spark


def _runtime_conf(settings: SparkSettings) -> dict[str, str]:
    """The SQL settings of every session, classic or Connect (a session may set them)."""
    return {
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Arrow batches to Python workers of at most 16 MB (default: 10,000 rows, about 150 MB
        # of source files): the JVM fills the next batch while Python hashes this one, and a
        # worker's memory stays bounded (bench/RESULTS.md, "Dedup speed").
        "spark.sql.execution.arrow.maxBytesPerBatch": str(16 << 20),
        # Parquet is decoded 256 rows at a time (default 4,096). Our big tables hold whole source
        # files, ~15 KB a row, so a 4,096-row batch put ~60 MB of text in one column vector and
        # the decoding ran from main memory, not the cache (bench/RESULTS.md, "Dedup speed").
        "spark.sql.parquet.columnarReaderBatchSize": "256",
    }


def spark_session(settings: SparkSettings) -> SparkSession:
    """The one SparkSession factory: local, local-cluster, spark-submit, Databricks, and a Spark
    Connect server (``master: sc://host:port``) alike."""
    from pyspark.sql import SparkSession

    if (settings.master or "").startswith("sc://"):
        return _connect_session(settings, _runtime_conf(settings))
    builder = SparkSession.builder.appName(settings.app_name)
    if settings.master:
        builder = builder.master(settings.master)
    mode = delta_jars_mode(settings)
    if mode == "maven":
        builder = builder.config("spark.jars", ",".join(resolve_delta_jars(settings.jars_dir)))
    elif mode == "packages":
        builder = builder.config("spark.jars.packages", settings.delta_package)
    local = (settings.master or "").startswith("local")
    if local:
        # Python workers must use this interpreter (with our dependencies), not whatever python3
        # is on PATH. An in-process SparkContext reads PYSPARK_PYTHON (the conf key
        # spark.pyspark.python is only honoured by spark-submit).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        builder.config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog",
                "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        # Jobs of concurrent threads share the executors instead of queueing behind the first
        # job's tasks (a stage's writes run side by side: jobs.runner._write_all).
        .config("spark.scheduler.mode", "FAIR")
        # Room for every class Spark generates (whole-stage code, projections, orderings) in a
        # session. The default LRU of 100 holds less than one dedup stage (many of its classes
        # are Delta's own log and commit queries), so every stage recompiled its classes with
        # Janino and the JIT compiled them again (bench/RESULTS.md, "Dedup speed").
        .config("spark.sql.codegen.cache.maxEntries", "1000")
    )
    for key, value in _runtime_conf(settings).items():
        builder = builder.config(key, value)
    if POOLS.exists():  # else Spark makes each pool on first use (and warns)
        builder = builder.config("spark.scheduler.allocation.file", str(POOLS))
    if "spark.ui.showConsoleProgress" not in settings.conf:
        # Spark's stage progress bar in a terminal; none in a log file or a pipe
        builder = builder.config("spark.ui.showConsoleProgress", str(sys.stderr.isatty()).lower())
    for key, value in settings.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.log_level)
    ship = settings.ship_code if settings.ship_code is not None else not (
        settings.master or "").startswith("local[")
    if ship:
        spark.sparkContext.addPyFile(build_code_zip())
    return spark
