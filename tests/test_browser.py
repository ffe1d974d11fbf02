"""What a user sees, in a real browser: a run's report.html and the MLflow UI served by
``codemill ui``, opened in headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
which .ci/run installs, driven by selenium)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from jobs.run_report import PLOTS
from tests.test_standalone import free_port, stop
from tests.training import tiny

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), (
        "headless Chromium: apt install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # no sandbox as root; no background connections (this machine's network refuses them)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def drawn(png: bytes) -> tuple[int, float]:
    """(distinct colours, share of pixels that are not the background) of a screenshot."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    pixels = list(image.getdata())
    background = max(set(pixels), key=pixels.count)
    return len(set(pixels)), sum(p != background for p in pixels) / len(pixels)


def test_the_report_shows_every_plot(browser, tracked_run, tmp_path):
    from selenium.webdriver.common.by import By

    lakehouse, result = tracked_run
    browser.get((Path(result.run_dir) / "report.html").resolve().as_uri())
    browser.save_screenshot(str(tmp_path / "report.png"))  # for a person reading a failure
    for key, title in PLOTS:
        figure = browser.find_element(By.ID, f"plot-{key}")
        assert title in figure.text
        svg = figure.find_element(By.TAG_NAME, "svg")
        size = svg.size
        assert size["width"] > 200 and size["height"] > 100, (key, size)
        browser.execute_script("arguments[0].scrollIntoView()", svg)
        colours, ink = drawn(svg.screenshot_as_png)
        # axes, labels and bars: several colours, and a real share of the plot drawn on
        assert colours >= 3 and ink > 0.02, (key, colours, ink)
    ledger = browser.find_element(By.ID, "ledger").text
    for report in result.reports:
        assert f"{report.stage} {report.rows_in:,} {report.rows_out:,}" in ledger


def wait_for_text(browser, url: str, *texts: str, timeout: float = 90) -> str:
    """Open ``url`` and wait until the page's text holds every one of ``texts``."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    page = lambda: browser.find_element(By.TAG_NAME, "body").text  # noqa: E731
    try:
        WebDriverWait(browser, timeout).until(lambda _: all(t in page() for t in texts))
    except TimeoutException:
        missing = [t for t in texts if t not in page()]
        raise AssertionError(f"{url}: {missing} not shown; the page: {page()[:2000]}") from None
    return page()


def test_the_mlflow_ui_shows_the_pipeline_run_and_a_training_run(browser, tracked_run, tmp_path):
    from mlflow import MlflowClient

    lakehouse, result = tracked_run
    # a real training run on the pipeline's gold.sft: 3 steps of the tiny recipe on one CPU rank
    tok = tiny.tokenizer(tmp_path / "tok")
    train = subprocess.run(
        [*tiny.torchrun(1, port_offset=7), str(tiny.REPO / "training" / "train.py"),
         "--recipe", str(tiny.REPO / "conf" / "train" / "tiny-cpu.yaml"),
         *(a for s in (f"data.tokenizer={tok}", f"data.lakehouse={lakehouse}",
                       f"train.output_dir={tmp_path / 'run'}", "train.gpus_per_node=1",
                       "train.max_steps=3", "train.save_steps=100")
           for a in ("--set", s))],
        cwd=tiny.REPO, env={k: v for k, v in tiny.env().items() if k != "MLFLOW_TRACKING_URI"},
        capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{Path(lakehouse).resolve() / '_mlflow' / 'mlflow.db'}")
    experiments = {e.name: e.experiment_id for e in client.search_experiments()}
    [training] = client.search_runs([experiments["codemill-lora"]])
    pipeline = client.get_run(result.mlflow_run_id)

    port = free_port()
    log = tmp_path / "ui.log"
    ui = subprocess.Popen([str(Path(sys.executable).parent / "codemill"), "ui", "--lakehouse",
                           lakehouse, "--port", str(port)], cwd=tmp_path,
                          env={k: v for k, v in os.environ.items()
                               if k != "MLFLOW_TRACKING_URI"},
                          stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert ui.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)

        # the pipeline's experiment lists the run by its codemill run id
        pipe_exp = pipeline.info.experiment_id
        wait_for_text(browser, f"{base}/#/experiments/{pipe_exp}/runs", result.run_id)
        # its page: the stages' metrics with the ledger's values
        dedup = next(r for r in result.reports if r.stage == "dedup")
        page = wait_for_text(browser, f"{base}/#/experiments/{pipe_exp}/runs/{pipeline.info.run_id}",
                             "dedup.rows_in", "dedup.dropped.near_duplicate", "Parameters")
        assert f"dedup.rows_in\n{dedup.rows_in}" in page, page[:3000]
        browser.save_screenshot(str(tmp_path / "pipeline-run.png"))

        # the training run: listed, its loss and the pipeline run that wrote its data
        train_exp = training.info.experiment_id
        wait_for_text(browser, f"{base}/#/experiments/{train_exp}/runs", training.info.run_name)
        page = wait_for_text(browser, f"{base}/#/experiments/{train_exp}/runs/{training.info.run_id}",
                             "loss", "tokens_per_second", f"pipeline run {result.run_id}")
        loss = training.data.metrics["loss"]
        assert loss > 0 and f"loss\n{repr(loss)[:5]}" in page, (loss, page[:3000])
        browser.save_screenshot(str(tmp_path / "training-run.png"))
    finally:
        stop([ui])
