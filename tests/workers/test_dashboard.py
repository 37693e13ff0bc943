"""The dashboard (/ui/) in a real browser (tests/browser.py) against a live API and worker, with every
request beyond the API refused: submit a job from the form and watch its curve gain points, its confusion
matrix, the form's own validation messages from the API, live status and cancel in the jobs list, drawing
digits on the canvas, and the pages at 390 pixels wide. Screenshots go to test-artifacts/."""

from __future__ import annotations

import contextlib
import math
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser import browser, offline_page, screenshot  # noqa: F401  (browser: a fixture)
from tests.helpers import LOGREG_SPEC, solar_forecaster

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
JOB_PAGE = "/^#\\/jobs\\/[0-9a-f-]{36}$/.test(location.hash)"


@pytest.fixture(scope="module")
def trained(embedded_stack, browser):
    """A job submitted from the form (an MLP on digits, 20 epochs), watched to its end; its id."""
    page = offline_page(browser, embedded_stack.base_url)
    page.goto(f"{embedded_stack.base_url}/ui/#/new")
    # This loopback server needs no key, so the page offers no key box; the form starts on a dataset it has.
    page.wait_for_function("document.getElementById('key-form').hidden", timeout=30_000)
    assert not page.locator("#key-form").is_visible()
    page.wait_for_selector("#f-dataset")
    assert page.locator("#f-dataset").input_value() == "digits"
    page.select_option("#f-dataset", "digits")
    page.select_option("[id='f-architecture.type']", "mlp")
    page.fill("[id='f-architecture.hidden_sizes']", "128, 64")
    page.fill("[id='f-training.epochs']", "20")
    page.fill("[id='f-training.batch_size']", "16")
    page.click("#job-form button[type=submit]")
    page.wait_for_function(JOB_PAGE, timeout=30_000)
    job_id = page.evaluate("location.hash.split('/').pop()")
    # The curve gains points while the job trains, one per epoch, then the result arrives.
    page.wait_for_function("Number(document.querySelector('#loss-chart')?.dataset.points || 0) >= 1", timeout=120_000)
    seen = [int(page.locator("#loss-chart").get_attribute("data-points"))]
    page.wait_for_selector("#confusion-matrix", timeout=180_000)
    seen.append(int(page.locator("#loss-chart").get_attribute("data-points")))
    page.trained_points = seen
    assert page.locator("#job-status").text_content() == "succeeded"
    screenshot(page, "dashboard-job")
    assert not page.refused and not page.errors, (page.refused, page.errors)
    page.job_id = job_id
    return page


def test_a_job_from_the_form_draws_its_curve_and_its_confusion_matrix(trained, embedded_stack):
    page = trained
    first, last = page.trained_points
    assert last == 20 and first < last, f"the curve grew while the page watched: {page.trained_points}"
    job = embedded_stack.http.get(f"/v1/jobs/{page.job_id}").json()
    assert job["spec"]["architecture"] == {**job["spec"]["architecture"], "type": "mlp", "hidden_sizes": [128, 64]}
    assert job["spec"]["training"]["epochs"] == 20 and job["spec"]["training"]["batch_size"] == 16
    matrix = job["result"]["confusion_matrix"]
    cells = page.locator("#confusion-matrix tbody td")
    assert cells.count() == 100 and [int(c) for c in cells.all_text_contents()] == [v for row in matrix for v in row]
    assert page.locator("#per-class tbody tr").count() == 10
    metrics = embedded_stack.http.get(f"/v1/jobs/{page.job_id}/metrics").json()["items"]
    assert page.locator("#accuracy-chart .u-legend").get_by_text("train").count() == 1
    assert all(0 < m["train_accuracy"] <= 1 for m in metrics), "the accuracy chart's train curve has its data"
    assert float(page.locator("#test-accuracy").text_content()) == pytest.approx(job["result"]["test_accuracy"], abs=1e-4)


def test_the_form_shows_the_api_s_validation_messages_beside_the_fields(embedded_stack, browser):
    page = offline_page(browser, embedded_stack.base_url)
    page.goto(f"{embedded_stack.base_url}/ui/#/new")
    page.fill("[id='f-training.epochs']", "0")
    page.click("#job-form button[type=submit]")
    message = page.locator("[id='e-training.epochs']")
    message.wait_for(timeout=10_000)
    page.wait_for_function("document.getElementById('e-training.epochs').textContent !== ''")
    assert "greater than or equal to 1" in message.text_content()
    assert "#/new" in page.url, "a refused job stays on the form"


def test_the_jobs_list_shows_live_status_and_cancels(embedded_stack, browser):
    long = {**LOGREG_SPEC, "training": {**LOGREG_SPEC["training"], "epochs": 1000, "batch_size": 8}}
    job_id = embedded_stack.http.post("/v1/jobs", json=long).json()["id"]
    page = offline_page(browser, embedded_stack.base_url)
    page.goto(f"{embedded_stack.base_url}/ui/#/jobs")
    row = page.locator(f"tr[data-job='{job_id}']")
    row.locator("td.status").filter(has_text=re.compile("queued|running")).wait_for(timeout=30_000)
    row.get_by_role("button", name="Cancel").click()
    row.locator("td.status", has_text="cancelled").wait_for(timeout=60_000)
    assert embedded_stack.http.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


def stroke(page, points) -> None:
    box = page.locator("#canvas").bounding_box()
    scale = box["width"] / 280
    page.mouse.move(box["x"] + points[0][0] * scale, box["y"] + points[0][1] * scale)
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
    page.mouse.up()


def drawn_label(page) -> int:
    page.wait_for_function("document.querySelector('#prediction')?.dataset.label !== undefined", timeout=20_000)
    return int(page.locator("#prediction").get_attribute("data-label"))


def test_draw_a_one_and_a_zero(trained, embedded_stack, browser):
    page = offline_page(browser, embedded_stack.base_url)
    page.goto(f"{embedded_stack.base_url}/ui/#/draw")
    model = embedded_stack.http.get(f"/v1/jobs/{trained.job_id}").json()["model"]["id"]
    page.locator("#canvas").wait_for()
    page.select_option("#model", model)
    stroke(page, [(140, 40 + 10 * i) for i in range(21)])
    assert drawn_label(page) == 1
    screenshot(page, "dashboard-draw-one")
    page.get_by_role("button", name="Clear").click()
    stroke(page, [(140 + 65 * math.cos(2 * math.pi * i / 40), 140 + 95 * math.sin(2 * math.pi * i / 40)) for i in range(42)])
    assert drawn_label(page) == 0
    assert page.locator("#probabilities .bar").count() == 10
    screenshot(page, "dashboard-draw-zero")
    assert not page.refused and not page.errors, (page.refused, page.errors)


@pytest.mark.parametrize("width", [1280, 390])
def test_the_pages_fit_the_screen_and_are_reached_by_keyboard(trained, embedded_stack, browser, width):
    page = offline_page(browser, embedded_stack.base_url, width=width)
    for hash_ in ("#/jobs", f"#/jobs/{trained.job_id}", "#/new", "#/draw", "#/datasets", "#/datasets/digits",
                  "#/models", "#/sweeps", f"#/compare/{trained.job_id},{trained.job_id}"):
        page.goto(f"{embedded_stack.base_url}/ui/{hash_}")
        page.locator("main h1").wait_for()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{hash_} is wider than {width} pixels by {overflow}"
        screenshot(page, f"dashboard-{hash_.strip('#/').replace('/', '-')[:20] or 'jobs'}-{width}")
    # Every link and control can be reached with Tab, and each has a name a screen reader can say.
    page.goto(f"{embedded_stack.base_url}/ui/#/new")
    page.locator("#job-form").wait_for()
    unnamed = page.evaluate("""[...document.querySelectorAll('a, button, input, select, textarea')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.outerHTML.slice(0, 80))""")
    assert not unnamed, unnamed
    page.evaluate("document.activeElement && document.activeElement.blur()")  # from the top of the page
    visited, wanted = [], {"Jobs", "New job", "Draw a digit", "f-dataset"}
    for _ in range(80):  # the page's every control and the header's, in a loop: fewer than 80 presses
        page.keyboard.press("Tab")
        visited.append(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
        if wanted <= set(visited) and len(set(visited)) > 30:
            break
    # no api-key box: this loopback server needs no key, and its schema says so
    assert wanted <= set(visited) and "api-key" not in visited, visited


def test_datasets_upload_with_progress_then_samples_of_each_class(embedded_stack, browser, tmp_path):
    from tests.datafiles import digits, npz

    x, y = digits(300)
    (tmp_path / "digits-300.npz").write_bytes(npz(x, y))
    page = offline_page(browser, embedded_stack.base_url)
    page.goto(f"{embedded_stack.base_url}/ui/#/datasets")
    page.locator("#upload-form").wait_for()
    page.set_input_files("#u-file", str(tmp_path / "digits-300.npz"))
    page.fill("#u-name", "ui-digits")
    page.click("#upload-form button[type=submit]")
    page.locator("#samples").wait_for(timeout=30_000)
    assert page.evaluate("document.getElementById('upload-progress') === null"), "on the dataset's page now"
    assert page.locator(".sample-row").count() == 10
    assert page.locator(".sample-row[data-class='3'] canvas").count() == 8
    assert page.locator("#dataset-stats").get_by_text("300").count() >= 1
    screenshot(page, "dashboard-dataset-images")
    # A refusal says why, beside the form.
    page.goto(f"{embedded_stack.base_url}/ui/#/datasets")
    page.set_input_files("#u-file", str(tmp_path / "digits-300.npz"))
    page.fill("#u-name", "Not A Name")
    page.click("#upload-form button[type=submit]")
    page.wait_for_function("document.getElementById('upload-error').textContent.includes('name')")
    assert not page.refused and not page.errors, (page.refused, page.errors)


def test_a_dataset_with_its_own_test_set_shows_both_parts(embedded_stack, browser):
    import io

    import numpy as np

    from tests.datafiles import digits

    x, y = digits(400)
    buffer = io.BytesIO()
    np.savez(buffer, x=x[:300], y=y[:300], x_test=x[300:], y_test=y[300:])
    row = embedded_stack.http.post("/v1/datasets", data={"name": "ui-with-test"},
                                   files={"file": ("digits.npz", buffer.getvalue())}).json()
    page = offline_page(browser, embedded_stack.base_url)
    page.goto(f"{embedded_stack.base_url}/ui/#/datasets/{row['ref']}")
    page.locator("#class-histogram thead").wait_for(timeout=30_000)
    stats = page.locator("#dataset-stats")
    assert stats.locator("tr", has_text="test samples").locator("td").inner_text() == "100"
    histogram = page.locator("#class-histogram")
    assert histogram.locator("thead th").all_inner_texts() == ["class", "training", "test"]
    test_counts = [int(t) for t in histogram.locator("tbody tr td:nth-of-type(2)").all_inner_texts()]
    assert test_counts == np.bincount(y[300:], minlength=10).tolist()
    assert not page.refused and not page.errors, (page.refused, page.errors)


def test_models_list_promotes_and_downloads(trained, embedded_stack, browser):
    model = embedded_stack.http.get(f"/v1/jobs/{trained.job_id}").json()["model"]
    page = offline_page(browser, embedded_stack.base_url)
    page.goto(f"{embedded_stack.base_url}/ui/#/models")
    row = page.locator(f"tr[data-model='{model['id']}']")
    row.wait_for()
    row.locator("input").fill("staging")
    row.get_by_role("button", name="Promote").click()  # through the gate: nothing holds staging yet
    page.locator(f"tr[data-model='{model['id']}'] td.aliases", has_text="staging").wait_for(timeout=10_000)
    page.locator(f"tr[data-model='{model['id']}'] td.gate", has_text="passed").wait_for(timeout=10_000)
    assert "staging" in embedded_stack.http.get(f"/v1/models/{model['id']}").json()["aliases"]
    row = page.locator(f"tr[data-model='{model['id']}']")
    row.locator("input").fill("canary")
    row.get_by_role("button", name="Set").click()  # without the gate
    page.locator(f"tr[data-model='{model['id']}'] td.aliases", has_text="canary").wait_for(timeout=10_000)
    with page.expect_download() as download:
        page.locator(f"tr[data-model='{model['id']}']").get_by_role("button", name="pt", exact=True).click()
    assert download.value.suggested_filename.endswith(".pt")
    screenshot(page, "dashboard-models")


def test_a_running_rollout_is_shown_live_and_paused_then_promoted(embedded_stack, browser):
    http, name = embedded_stack.http, "ui-rollout"
    for epochs in (3, 6):
        job = http.post("/v1/jobs", json={**LOGREG_SPEC, "name": name, "training": {"epochs": epochs}}).json()
        assert embedded_stack.wait_for(job["id"])["status"] == "succeeded"
    http.put(f"/v1/models/{name}/aliases/production", json={"version": 1}).raise_for_status()
    rollout = http.post(f"/v1/models/{name}/rollouts", json={
        "candidate": 2, "steps": [{"weight": 50, "min_seconds": 3600}, {"weight": 100}],
        "gates": {"min_requests": 1000000}}).json()
    page = offline_page(browser, embedded_stack.base_url)
    page.goto(f"{embedded_stack.base_url}/ui/#/models?name={name}")
    card = page.locator(f"[data-rollout='{rollout['id']}']")
    card.wait_for(timeout=10_000)
    assert card.get_attribute("data-status") == "running" and "step 1 of 2 at 50 %" in card.text_content()
    assert card.locator("[data-gate]").count() == 3
    # The live numbers follow the traffic: the API routes it once its background pass has read the rollout
    # (every 2 s), counts it, and the page reads the counts every 2 s.
    counted = f"""[...document.querySelectorAll("[data-rollout='{rollout['id']}'] tr[data-arm]")]
        .reduce((n, r) => n + Number(r.children[2].textContent), 0)"""
    deadline = time.monotonic() + 60
    while page.evaluate(counted) < 10:
        assert time.monotonic() < deadline, "the rollout's live numbers never showed the traffic"
        for _ in range(10):
            http.post("/predict", json={"instances": [[0.0] * 64], "model": f"{name}@production"}).raise_for_status()
        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_function(f"{counted} >= 10", timeout=2_500)
    card.get_by_role("button", name="Pause").click()
    page.locator(f"[data-rollout='{rollout['id']}'][data-status='paused']").wait_for(timeout=10_000)
    screenshot(page, "dashboard-rollout")
    page.locator(f"[data-rollout='{rollout['id']}']").get_by_role("button", name="Promote").click()
    page.locator(f"[data-rollout='{rollout['id']}'][data-status='succeeded']").wait_for(timeout=10_000)
    assert http.get(f"/v1/models/{name}@production").json()["version"] == 2
    history = page.locator(f"[data-rollout='{rollout['id']}'] .decisions li").all_text_contents()
    assert any("step 1 begins: 50 %" in h for h in history) and any("promoted by" in h for h in history), history
    assert not page.refused and not page.errors, (page.refused, page.errors)


def test_a_model_s_page_shows_its_live_quality_drift_chart_and_retraining_policy(embedded_stack, browser):
    """Digits drawn black on white drift the version's inputs past the threshold: the chart of the last day
    shows the hour and the page says so, beside the live accuracy from feedback and the retraining policy."""
    from sklearn.datasets import load_digits

    http, name = embedded_stack.http, "ui-watched"
    job = http.post("/v1/jobs", json={**LOGREG_SPEC, "name": name}).json()
    assert embedded_stack.wait_for(job["id"])["status"] == "succeeded"
    http.put(f"/v1/models/{name}/aliases/production", json={"version": 1}).raise_for_status()
    http.put(f"/v1/models/{name}/monitoring", json={"log_share": 1.0}).raise_for_status()
    http.put(f"/v1/models/{name}/retraining", json={"triggers": {"every_hours": 168}}).raise_for_status()
    bunch = load_digits()
    inverted, labels, sent = (16.0 - bunch.data[:400]).tolist(), bunch.target[:400].tolist(), []

    def drifting():
        for start in range(0, 400, 20):
            r = http.post("/predict", json={"instances": inverted[start:start + 20], "model": f"{name}@production"})
            sent.append({"request_id": r.raise_for_status().headers["x-request-id"], "labels": labels[start:start + 20]})
        return http.get(f"/v1/models/{name}/versions/1/drift").json()["drifting"] or None

    embedded_stack.wait_until(drifting, "drift past the threshold", timeout=60)  # the share is read every 2 s
    embedded_stack.wait_until(  # the log is written every 2 s: feedback names a request once it is
        lambda: http.post("/v1/feedback", json={"items": sent[-20:]}).json()["accepted"] == 20 or None,
        "the last requests in the prediction log", timeout=30)
    page = offline_page(browser, embedded_stack.base_url)
    page.goto(f"{embedded_stack.base_url}/ui/#/models?name={name}")
    chart = page.locator("#drift-chart[data-drifting='true']")
    chart.wait_for(timeout=10_000)
    assert int(chart.get_attribute("data-points")) >= 1 and chart.locator("canvas").count() == 1
    assert "drifting:" in page.locator("#drift").text_content()
    quality = page.locator("#live-quality").text_content()
    assert "Labelledinstances400" in quality.replace(" ", ""), quality
    assert "every 168 h" in page.locator("#retraining").text_content()
    screenshot(page, "dashboard-monitoring")
    assert not page.refused and not page.errors, (page.refused, page.errors)


def test_a_forecast_with_its_interval_and_the_anomalies_marked(embedded_stack, browser):
    spec = solar_forecaster("ui-solar", horizon=4)
    job = embedded_stack.http.post("/v1/jobs", json=spec).json()
    assert embedded_stack.wait_for(job["id"])["status"] == "succeeded"
    page = offline_page(browser, embedded_stack.base_url)
    page.goto(f"{embedded_stack.base_url}/ui/#/forecast")
    page.wait_for_function("document.getElementById('forecast-chart')?.dataset.forecast === '4'", timeout=30_000)
    assert int(page.locator("#forecast-chart").get_attribute("data-points")) > 4
    assert page.locator("#forecast-chart .u-legend").get_by_text("upper").count() == 1
    assert "anomalies marked" in page.locator("#forecast-note").text_content()
    screenshot(page, "dashboard-forecast")
    assert not page.refused and not page.errors, (page.refused, page.errors)


def test_runs_sort_filter_and_compare_side_by_side(trained, embedded_stack, browser):
    """The jobs list as a runs table: name, dataset, architecture, status, test metric, duration, start; sorted
    by a column, filtered by words, and two runs compared: curves overlaid, metrics and specs side by side with
    the settings that differ marked."""
    other = embedded_stack.http.post("/v1/jobs", json={**LOGREG_SPEC, "name": "ui-compare"}).json()
    assert embedded_stack.wait_for(other["id"])["status"] == "succeeded"
    page = offline_page(browser, embedded_stack.base_url)
    page.goto(f"{embedded_stack.base_url}/ui/#/jobs")
    row = page.locator(f"tr[data-job='{other['id']}']")
    row.locator("td.metric", has_text="accuracy").wait_for(timeout=30_000)
    assert row.get_by_role("link", name="ui-compare v1").count() == 1
    assert row.get_by_role("link", name="digits").count() == 1 and row.get_by_text(" s", exact=False).count() >= 1

    page.locator("button.sort[data-sort='metric']").click()  # best first
    page.wait_for_function("document.querySelector('th[aria-sort=descending] button[data-sort=metric]') !== null")
    shown = [float(t.split()[-1]) for t in page.locator("#jobs tbody td.metric").all_inner_texts()
             if t.startswith("accuracy")]
    assert len(shown) >= 2 and shown == sorted(shown, reverse=True), shown
    page.locator("button.sort[data-sort='metric']").click()  # and worst first
    page.wait_for_function("document.querySelector('th[aria-sort=ascending] button[data-sort=metric]') !== null")
    shown = [float(t.split()[-1]) for t in page.locator("#jobs tbody td.metric").all_inner_texts()
             if t.startswith("accuracy")]
    assert shown == sorted(shown), shown

    page.fill("#run-filter", "ui-compare")
    page.wait_for_function("document.querySelectorAll('#jobs tbody tr[data-job]').length === 1")
    page.fill("#run-filter", "")
    for job_id in (trained.job_id, other["id"]):
        page.locator(f"tr[data-job='{job_id}'] input[type=checkbox]").check()
    page.get_by_role("button", name="Compare").click()
    page.wait_for_function("document.getElementById('compare-loss')?.dataset.series === '2'", timeout=30_000)
    differs = page.locator("#compare-specs tr.differs").evaluate_all("rows => rows.map(r => r.dataset.key)")
    assert "architecture.type" in differs and "name" in differs and "dataset" not in differs, differs
    assert page.locator("#compare-metrics thead th").count() == 3  # the label column and the two runs
    assert page.locator("#compare-accuracy .u-legend").get_by_text("ui-compare v1 val").count() == 1
    # the legend shows the last epoch's values, not "--", until the pointer is on the chart
    page.wait_for_function("!document.querySelector('#compare-loss .u-legend').innerText.includes('--')", timeout=5_000)
    screenshot(page, "dashboard-compare")
    assert not page.refused and not page.errors, (page.refused, page.errors)


def test_the_forecast_page_shows_a_day_total_forecaster(embedded_stack, browser):
    """Lab 3's forecaster (examples/lab3-solar.yaml, fewer epochs): the newest day's first readings, the day's
    total it forecasts with its interval, and what the day made; the documented screenshot."""
    import yaml

    spec = yaml.safe_load((ROOT / "examples" / "lab3-solar.yaml").read_text())
    spec = {**spec, "name": "ui-lab3-solar", "training": {**spec["training"], "epochs": 5}, "promote": None}
    job = embedded_stack.wait_for(embedded_stack.http.post("/v1/jobs", json=spec).json()["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    page = offline_page(browser, embedded_stack.base_url)
    page.goto(f"{embedded_stack.base_url}/ui/#/forecast")
    page.locator("#forecaster").wait_for()
    page.select_option("#forecaster", job["model"]["id"])
    page.wait_for_function("document.getElementById('forecast-chart')?.dataset.framing === 'day_total' && "
                           "document.getElementById('forecast-chart')?.dataset.forecast === '1'", timeout=30_000)
    assert "The day's total forecast from its first" in page.locator("#forecast-note").text_content()
    assert page.locator("#forecast-chart .u-legend").get_by_text("forecast total").count() == 1
    assert page.locator("main .error").count() == 0
    screenshot(page, "dashboard-forecast-day-total")
    assert not page.refused and not page.errors, (page.refused, page.errors)


def test_a_sweep_s_page_shows_its_trials_and_the_metric_against_each_parameter(embedded_stack, browser):
    base = {**LOGREG_SPEC, "training": {**LOGREG_SPEC["training"], "epochs": 3}}
    sweep = embedded_stack.http.post("/v1/sweeps", json={
        "name": "ui-sweep", "base": base, "space": {"training.learning_rate": {"low": 0.01, "high": 0.3, "log": True}},
        "budget": {"trials": 3, "parallel": 1}, "pruner": {"type": "none"}}).json()
    done = embedded_stack.wait_until(lambda: (lambda s: s if s["status"] != "running" else None)(
        embedded_stack.http.get(f"/v1/sweeps/{sweep['id']}").json()), "the sweep", timeout=300)
    assert done["status"] == "succeeded", done
    page = offline_page(browser, embedded_stack.base_url)
    page.goto(f"{embedded_stack.base_url}/ui/#/sweeps")
    page.get_by_role("link", name="ui-sweep").first.click()
    page.wait_for_function("document.getElementById('sweep-metric')?.dataset.points === '3'", timeout=30_000)
    assert page.locator("#trials tbody tr").count() == 3
    assert page.locator(f"#trials tr[data-trial='{done['best']['number']}']").get_attribute("class") == "best"
    assert page.locator("#sweep-params [data-param='training.learning_rate'] canvas").count() >= 1
    screenshot(page, "dashboard-sweep")
    assert not page.refused and not page.errors, (page.refused, page.errors)


@pytest.fixture
def prefixed(embedded_stack):
    """A reverse proxy that serves the API under /trainserve/ and strips the prefix, as an ingress does."""
    import http.server
    import threading

    import httpx

    upstream = httpx.Client(base_url=embedded_stack.base_url, timeout=60)

    class Proxy(http.server.BaseHTTPRequestHandler):
        def forward(self) -> None:
            if not self.path.startswith("/trainserve/"):
                self.send_error(404, "outside the prefix")
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            answer = upstream.request(self.command, self.path[len("/trainserve"):], content=body, headers=headers)
            self.send_response(answer.status_code)
            for k, v in answer.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = forward  # noqa: N815

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/trainserve"
    server.shutdown()
    upstream.close()


def test_behind_an_ingress_path_prefix(trained, prefixed, browser):
    page = offline_page(browser, prefixed)
    page.goto(f"{prefixed}/")  # redirected to the dashboard under the prefix
    page.locator(f"tr[data-job='{trained.job_id}']").wait_for(timeout=30_000)
    assert page.url.startswith(f"{prefixed}/ui/")
    page.goto(f"{prefixed}/ui/#/jobs/{trained.job_id}")  # a finished job's events replay through the proxy
    page.locator("#confusion-matrix").wait_for(timeout=30_000)
    page.goto(f"{prefixed}/docs")
    page.locator(".opblock").first.wait_for(timeout=30_000)
    assert not page.refused and not page.errors, (page.refused, page.errors)
