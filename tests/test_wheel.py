"""The wheel carries conf/ (as the codemill_conf package): installed anywhere, with no checkout
beside it, the pipeline's config and the training recipes load from it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_installed_wheel_finds_its_config(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "-w", str(tmp_path / "dist"), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("codemill-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"codemill_conf/pipeline.yaml", "codemill_conf/env/cluster.yaml",
            "codemill_conf/sft_templates.yaml", "codemill_conf/jars/pom.xml",
            "codemill_conf/train/qwen2.5-coder-32b-lora.yaml",
            "codemill_conf/deepspeed/zero3.json"} <= names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip install puts in site-packages
    script = (
        f"import sys; sys.path.insert(0, {str(site)!r})\n"
        "import jobs, udfs.settings as s\n"
        "from jobs.config import load_config\n"
        "from training.recipe import load_recipe\n"
        f"assert jobs.__file__.startswith({str(site)!r}), jobs.__file__\n"
        "import jobs.registry, jobs.dedup.stage\n"  # every stage, subpackages included
        f"assert jobs.dedup.stage.__file__.startswith({str(site)!r})\n"
        "cfg = load_config(env='cluster')\n"
        "r = load_recipe('qwen2.5-coder-32b-lora')\n"
        "print(s.conf_dir(), cfg.spark.master, r.train.zero_stage(), cfg.sft.templates_path())\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    conf, master, stage, templates = done.stdout.split()
    assert conf == str(site / "codemill_conf") and master == "None" and stage == "3"
    assert templates == str(site / "codemill_conf" / "sft_templates.yaml")
