from __future__ import annotations

import pytest

from jobs.cli import curation_overrides
from jobs.config import ConfigError, load_config, parse_override
from jobs.runner import preflight


def test_layers_and_overrides(tmp_path):
    cfg = load_config(env="local", overrides=["filter.params.min_stars=5",
                                              "filter.params.languages=[python, go]"])
    assert cfg.spark.master == "local[*]"  # from conf/env/local.yaml
    assert cfg.filter.params.min_stars == 5
    assert cfg.filter.params.languages == ("python", "go")
    assert load_config(env="cluster").spark.master is None


def test_curation_flags_become_overrides():
    cfg = load_config(overrides=curation_overrides(["rust"], 100, 50))
    assert (cfg.filter.params.languages, cfg.filter.max_samples,
            cfg.filter.params.min_stars) == (("rust",), 100, 50)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("filter.params.min_linez=3", "filter.params.min_linez: unknown key; allowed keys here: "
                                      "allowed_licenses"),
        ("spark.delta_jars=foo", "spark.delta_jars: Input should be 'auto', 'maven', 'packages' "
                                 "or 'provided'"),
        ("filter.params.unknown_stars=maybe", "filter.params.unknown_stars: Input should be "
                                              "'keep' or 'drop'"),
        ("filter.params.min_lines=many", "filter.params.min_lines: Input should be a valid integer"),
        ("bogus=1", "bogus: unknown key; allowed keys here: chats, commits, decontam, dedup, "
                    "filter, ingest, lakehouse, mlflow, report, sft, spark, split, stages"),
        ("ingest.sources=[{kind: tree, path: x, depth: 1}]",
         "ingest.sources.0.depth: unknown key; allowed keys here: kind, layout, path"),
        ("filter.params.rules=[lines, vibes]", "filter.params.rules: unknown rule(s) vibes"),
        ("stages=[ingest, dedupe]", "stages.1: Input should be 'ingest', 'filter', 'dedup', "
                                    "'split', 'commits', 'chats' or 'build_sft'"),
        ("sft.mixture={code: 0.5, git: 0.2}", "sft.mixture: shares must add up to 1 (they "
                                              "add up to 0.7)"),
        ("sft.mixture={code: 0.5, wiki: 0.5}", "sft.mixture.wiki"),
        ("ingest.sources=[{kind: git, path: ., branch: dev}]",
         "ingest.sources.0.branch: unknown key; allowed keys here: kind, layout, name, path, "
         "refs"),
        ("ingest.sources=[{kind: parquet, path: x, columns: {txt: content}}]",
         "ingest.sources.0.columns: unknown field txt: the fields are text, language, license, "
         "stars, path, repo"),
        ("ingest.sources=[{kind: chat, path: x, format: csv}]",
         "ingest.sources.0.format: Input should be 'auto', 'messages' or 'sharegpt'"),
        ("sft.augmentations=[debug, dance]", "sft.augmentations.1: Input should be"),
        ("sft.templates=conf/nope.yaml", "sft.templates: file not found"),
        ("split.params.fim_rate=2", "split.params: fim_rate: must be in [0, 1]"),
        ("split.params.tasks=[fim, summarize]", "tasks: unknown ['summarize']; allowed: "
                                                "function_completion, class_completion"),
        ("split.params.max_depth=3", "split.params.max_depth: unknown key; allowed keys here: "
                                     "fallback_samples"),
        ("split.repo_fim_rate=1.5", "split.repo_fim_rate: Input should be less than or equal to 1"),
    ],
)
def test_bad_config_names_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert message in str(err.value)


def test_bad_env_and_override_syntax():
    with pytest.raises(ConfigError, match="env: no overlay .*allowed: cluster, databricks, local"):
        load_config(env="moon")
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        parse_override("novalue")


def test_missing_source_fails_before_spark(tmp_path):
    cfg = load_config(overrides=[f"ingest.sources=[{{kind: tree, path: {tmp_path}/nope}}]"])
    with pytest.raises(ConfigError, match=r"ingest.sources.0.path: .*nope does not exist"):
        preflight(cfg, ["ingest", "filter"])


def test_config_hash_changes_with_content():
    assert load_config().config_hash() == load_config().config_hash()
    assert load_config().config_hash() != load_config(
        overrides=["filter.params.min_lines=3"]).config_hash()
    assert load_config().config_hash() != load_config(
        overrides=["dedup.threshold=0.8"]).config_hash()


def test_config_hash_ignores_where_and_how_fast():
    base = load_config().config_hash()
    for override in ("lakehouse=/elsewhere", "spark.master=local[1]", "stages=[ingest]",
                     "dedup.tuning.direct_reads=false", "dedup.tuning.direct_writes=false",
                     "dedup.tuning.one_task_files=0", "dedup.tuning.broadcast_rows=0",
                     "dedup.max_rounds=3"):
        assert load_config(overrides=[override]).config_hash() == base, override
