"""The operator console in a real browser: headless Debian Chromium driven by Playwright, a live server, and a
real django-q2 worker training the tiny preset. Screenshots of the main pages go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from playwright import sync_api as playwright_sync

from datasets.demo import demo_dataset_create
from models_registry.models import TrainedModel
from tests.e2e.waiting import finished
from training.models import TrainingRun

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(autouse=True, scope="module")
def sync_orm_beside_playwright():
    """Playwright's sync API runs an event loop in this thread; the ORM calls here are ordinary synchronous ones.
    The switch is on for these tests only (set at import, it leaked into every later test of the session)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture
def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        instance = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield instance
        instance.close()


def staff(username: str, group: str) -> User:
    user = User.objects.create_user(username, password=f"{username}-Pw-2026!", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def login(browser, live_server, user: User):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", f"{user.username}-Pw-2026!")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/$"))
    return page


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_operator_starts_watches_and_publishes(worker, roles, live_server, browser, tmp_path):
    operator = staff("operator", "Administrator")
    dataset = demo_dataset_create(name="browser demo", images=120, seed=11, created_by=operator)
    page = login(browser, live_server, operator)

    # The form refuses bad input with field errors, and nothing is queued.
    page.goto(f"{live_server.url}/admin/training/trainingrun/")
    page.click("#start-run")
    page.select_option("#id_dataset", str(dataset.pk))
    page.fill("#id_epochs", "0")
    page.fill("#id_image_size", "250")
    page.click("input[name=_start]")
    assert "0 is out of range" in page.inner_text(".field-epochs .errorlist")
    assert "not a multiple of 32" in page.inner_text(".field-image_size .errorlist")
    shot(page, "start-form-errors")
    assert TrainingRun.objects.count() == 0

    # A good run starts and is queued for the worker.
    page.fill("#id_name", "from the browser")
    page.fill("#id_epochs", "3")
    page.fill("#id_image_size", "")
    page.click("input[name=_start]")
    page.wait_for_url(re.compile(r".*/admin/training/trainingrun/\d+/change/$"))
    run = TrainingRun.objects.get(name="from the browser")
    assert run.created_by == operator and run.parameters["epochs"] == 3
    # The selects left as they opened asked for nothing: the run took the defaults.
    assert run.parameters["orientations"] == "flips" and run.parameters["optimizer"] == "AdamW"

    # The list's progress bar advances by itself while the worker trains.
    page.goto(f"{live_server.url}/admin/training/trainingrun/")
    bar = f'.run-progress[data-run="{run.pk}"] progress'
    seen: list[float] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            value = float(page.eval_on_selector(bar, "el => el.value"))
        except playwright_sync.Error:
            value = None  # the page is reloading itself (it does when a run ends)
        if value is not None:
            seen.append(value)
            if 0 < value < 100 and len([v for v in seen if 0 < v < 100]) == 1:
                shot(page, "runs-list-training")
        if TrainingRun.objects.filter(pk=run.pk, status__in=TrainingRun.FINISHED).exists():
            break
        time.sleep(1)
    mid = sorted({v for v in seen if 0 < v < 100})
    assert len(mid) >= 2, seen  # at least two different in-between values, updated without reloading
    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message
    page.wait_for_selector(f'.run-progress[data-run="{run.pk}"][data-status="succeeded"]', timeout=30000)
    shot(page, "runs-list")

    page.goto(f"{live_server.url}/admin/training/trainingrun/{run.pk}/change/")
    assert page.locator("svg.chart polyline").count() >= 3  # loss, learning rate, mAP curves
    shot(page, "run-detail")

    # Publish the resulting model from its page.
    model = TrainedModel.objects.get(source_run=run)
    page.goto(f"{live_server.url}/admin/models_registry/trainedmodel/{model.pk}/change/")
    shot(page, "model-detail")

    # Its results in depth, from the run's validation: the per-class table (sortable), the PR charts, the confusion
    # matrix; then the gallery of validation images with boxes and detections drawn.
    assert page.locator("#per-class-table tbody tr").count() == len(model.class_names)
    assert page.locator("#pr-charts svg.chart polyline").count() >= len(model.class_names)
    assert page.locator("#confusion-matrix tbody tr").count() == len(model.class_names) + 1
    page.click("#per-class-table thead th:nth-child(3) a")  # AP50, highest first
    page.wait_for_url(re.compile(r".*sort=-ap50.*"))
    values = page.locator("#per-class-table tbody tr td:nth-child(3)").all_inner_texts()
    assert values == sorted(values, reverse=True), values
    page.locator("#validation-results").screenshot(path=str(SHOTS / "model-per-class.png"))
    page.click("#gallery-link")
    page.wait_for_function(
        "() => { const i = document.querySelector('#gallery img'); return i && i.complete && i.naturalWidth > 0; }",
        timeout=20000,
    )
    assert page.locator("#gallery figure").count() > 0
    shot(page, "evaluation-gallery")
    page.goto(f"{live_server.url}/admin/models_registry/trainedmodel/{model.pk}/change/")
    page.click("#publish-toggle")
    page.wait_for_selector(".messagelist .success")
    assert "is published" in page.inner_text(".messagelist")
    model.refresh_from_db()
    assert model.is_published and model.published_by == operator

    for url, name in (
        ("/admin/models_registry/trainedmodel/", "models-list"),
        ("/admin/models_registry/trainedmodel/lineage/", "lineage"),
        (f"/admin/datasets/dataset/{dataset.pk}/change/", "dataset-detail"),
        (f"/admin/datasets/datasetimage/?dataset__id__exact={dataset.pk}", "dataset-images"),
    ):
        page.goto(live_server.url + url)
        shot(page, name)
    assert page.locator("img.thumb").count() > 0  # lazily loaded; the first ones are on screen
    page.wait_for_function(
        "() => { const i = document.querySelector('img.thumb'); return i && i.complete && i.naturalWidth > 0; }",
        timeout=10000,
    )
    page.goto(f"{live_server.url}/admin/datasets/dataset/{dataset.pk}/change/")
    page.wait_for_selector("#dataset-map path.image-point, #dataset-map canvas", timeout=10000)

    detect_from_the_model_page(page, live_server, model, dataset, tmp_path)


def test_viewer_finds_no_way_to_start_cancel_or_publish(roles, live_server, browser, make_dataset, tmp_path):
    viewer = staff("viewer", "Viewer")
    owner = staff("owner", "Administrator")
    dataset = make_dataset(name="viewer data")
    run = TrainingRun.objects.create(name="someone's run", dataset=dataset, status="queued", created_by=owner)
    from guardian.shortcuts import assign_perm

    assign_perm("training.view_trainingrun", viewer, run)  # shared with the viewer: visible, not controllable
    from tests.world import register_model

    done = TrainingRun.objects.create(name="done", dataset=dataset, status="succeeded", created_by=owner)
    model = register_model(done, tmp_path)
    TrainedModel.objects.filter(pk=model.pk).update(is_published=True)

    page = login(browser, live_server, viewer)
    page.goto(f"{live_server.url}/admin/training/trainingrun/")
    assert page.locator("#start-run").count() == 0
    assert page.locator(f'.run-progress[data-run="{run.pk}"]').count() == 1
    actions = page.locator("select[name=action] option").all_inner_texts()
    assert not any("Cancel" in a or "Retry" in a or "Publish" in a for a in actions), actions
    shot(page, "viewer-runs-list")
    response = page.goto(f"{live_server.url}/admin/training/trainingrun/start/")
    assert response.status == 403

    page.goto(f"{live_server.url}/admin/models_registry/trainedmodel/{model.pk}/change/")
    assert page.locator("#publish-toggle").count() == 0
    assert page.locator("#detect-link").count() == 0  # a viewer runs no detections
    shot(page, "viewer-model-detail")
    page.goto(f"{live_server.url}/admin/models_registry/trainedmodel/")
    actions = page.locator("select[name=action] option").all_inner_texts()
    assert not any("ublish" in a for a in actions), actions
    # Posting to the publish URL directly is refused as well.
    csrf = page.evaluate("() => document.cookie.match(/csrftoken=([^;]+)/)[1]")
    status = page.evaluate(
        """async ([url, csrf]) => (await fetch(url, {method: 'POST', headers: {'X-CSRFToken': csrf},
                           body: new URLSearchParams({unpublish: '1'})})).status""",
        [f"/admin/models_registry/trainedmodel/{model.pk}/publish/", csrf],
    )
    assert status == 200  # fetch follows the redirect back to the model's page, where the refusal is shown
    model.refresh_from_db()
    assert model.is_published  # the viewer could not unpublish it


def detect_from_the_model_page(page, live_server, model, dataset, tmp_path):
    """The model just trained, over an orthophoto uploaded on the form with known sites: the worker runs it, and
    its page draws the footprint, the sites and the detections; a click on one shows its crop."""
    from django.contrib.gis.geos import Polygon

    from detection.models import Detection, KnownSite
    from engine.geometry import pixel_to_map
    from tests.detection.scenes import rotated, scene, write_geotiff

    geotransform = rotated((500_000.0, 5_100_000.0), 0.2, 10.0)
    painted = scene(640, 512, [(100, 120, 70, 64), (400, 300, 80, 70), (230, 380, 64, 64)], seed=5)
    tif = write_geotiff(tmp_path / "flight.tif", painted.pixels, srid=32633, geotransform=geotransform)
    corners = [pixel_to_map(geotransform, x, y) for x, y in ((100, 120), (170, 120), (170, 184), (100, 184))]
    site = Polygon([*corners, corners[0]], srid=32633)
    sites = tmp_path / "sites.geojson"
    sites.write_text(
        '{"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32633"}}, "features": '
        f'[{{"type": "Feature", "properties": {{"id": "pile A"}}, "geometry": {site.geojson}}}]}}'
    )
    page.goto(f"{live_server.url}/admin/models_registry/trainedmodel/{model.pk}/change/")
    page.click("#detect-link")
    page.set_input_files("#id_files", str(tif))
    page.select_option("#id_dataset", str(dataset.pk))
    page.set_input_files("#id_known_sites", str(sites))
    page.fill("#id_score_threshold", "0.05")
    page.fill("#id_name", "detected from the browser")
    shot(page, "detect-form")
    page.click("input[name=_start]")
    page.wait_for_url(re.compile(r".*/admin/detection/detectionrun/\d+/change/$"))
    run = TrainingRun.objects.get(name="detected from the browser")
    assert run.kind == "detect" and run.evaluated_model_id == model.pk
    run = finished(run.pk, timeout=300)
    assert run.status == "succeeded", run.error_message
    count = Detection.objects.filter(run=run).count()
    assert count >= 1 and KnownSite.objects.filter(run=run).count() == 1
    # The page reloads itself once its progress poll sees the run end (a reload of our own could collide with it).
    page.wait_for_selector("#detection-map path.detection-on-map", timeout=30000)
    assert page.locator("#detection-map path.footprint").count() == 1
    assert page.locator("#detection-map path.known-site").count() == 1
    assert page.locator("#detection-map path.detection-on-map").count() == min(count, 3000)
    assert page.locator("#site-figures").count() == 1 and page.locator("#site-curves svg.chart").count() == 2
    page.locator("#detection-map path.detection-on-map").first.click(force=True)
    page.wait_for_function(
        "() => { const i = document.querySelector('#detection-crop'); return i && i.complete && i.naturalWidth > 0; }",
        timeout=10000,
    )
    shot(page, "detection-run-map")
    # The score slider at its top hides every detection but those scoring 1.
    page.eval_on_selector("#score-filter", "el => { el.value = 1; el.dispatchEvent(new Event('input')); }")
    assert page.locator("#detection-map path.detection-on-map").count() == 0
    assert "0 of" in page.inner_text("#map-count")

    review_by_keyboard(page, run)


def review_by_keyboard(page, run):
    """The review queue: confirm, reject, redraw a box and change its class, add a missed site, by keyboard."""
    from detection.models import Detection

    def settled(pk, **expected):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            row = Detection.objects.filter(pk=pk, **expected).first()
            if row is not None:
                return row
            time.sleep(0.2)
        raise AssertionError(f"detection {pk} is not {expected}")

    page.click("#review-link")
    page.wait_for_function(
        "() => { const i = document.querySelector('#review-crop'); return i && i.complete && i.naturalWidth > 0; }",
        timeout=10000,
    )
    ids = page.evaluate("() => JSON.parse(document.getElementById('review-data').textContent).items.map(i => i.id)")
    assert len(ids) >= 3
    shot(page, "review-queue")
    page.keyboard.press("c")
    settled(ids[0], state="confirmed")
    page.wait_for_function(f"() => document.getElementById('review-title').textContent.startsWith('#{ids[1]} ')")
    page.keyboard.press("x")
    settled(ids[1], state="rejected")
    page.wait_for_function(f"() => document.getElementById('review-title').textContent.startsWith('#{ids[2]} ')")
    stage = page.locator("#review-stage").bounding_box()
    page.mouse.move(stage["x"] + 30, stage["y"] + 30)
    page.mouse.down()
    page.mouse.move(stage["x"] + 160, stage["y"] + 140, steps=6)
    page.mouse.up()
    other = 2 if Detection.objects.get(pk=ids[2]).label == 0 else 1  # the key of the other class
    page.keyboard.press(str(other))
    shot(page, "review-correction")
    page.keyboard.press("c")
    corrected = settled(ids[2], state="confirmed", reviewed_by__isnull=False)
    assert corrected.model_box is not None and corrected.model_class and corrected.label == other - 1
    page.keyboard.down("Shift")
    page.mouse.move(stage["x"] + 200, stage["y"] + 200)
    page.mouse.down()
    page.mouse.move(stage["x"] + 260, stage["y"] + 250, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    page.keyboard.press("a")
    page.wait_for_function("() => document.getElementById('review-status').textContent.startsWith('Added')")
    assert Detection.objects.filter(run=run, origin="reviewer", state="confirmed").count() == 1
