"""manage.py commands: refusals end non-zero with a one-line reason and leave nothing behind."""

import io
import json
from pathlib import Path

import pytest
import torch
from django.core.management import CommandError, call_command

from datasets.models import Dataset
from models_registry.models import TrainedModel
from tests.conftest import jpeg_bytes
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def operator(db):
    """The one administrator commands act as when no --user is given (scripts/setup.sh makes 'operator')."""
    from core.commands import ensure_operator

    ensure_operator()


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_make_demo_dataset_is_deterministic_and_idempotent_with_if_missing():
    assert "5 tiles" in run("make_demo_dataset", "--name", "a", "--images", "5", "--seed", "4")
    assert "already exists" in run("make_demo_dataset", "--name", "a", "--images", "5", "--if-missing")
    run("make_demo_dataset", "--name", "b", "--images", "5", "--seed", "4")
    a, b = (Dataset.objects.get(name=n) for n in "ab")
    assert list(a.images.values_list("sha256", flat=True)) == list(b.images.values_list("sha256", flat=True))
    image = a.images.first()
    assert image.location is not None and image.footprint.contains(image.location) and image.captured_at
    with pytest.raises(CommandError, match="already exists"):
        run("make_demo_dataset", "--name", "a", "--images", "5")


@pytest.mark.parametrize(
    "args, reason",
    [
        (["--dataset", "nope"], "No dataset 'nope'"),
        (["--dataset", "demo", "--epochs", "0"], "epochs: 0 is out of range"),
        (["--dataset", "demo", "--image-size", "100"], "not a multiple of 32"),
        (["--dataset", "demo", "--base-model", "999"], "No trained model #999"),
    ],
)
def test_train_refuses_bad_input_with_one_line(args, reason):
    run("make_demo_dataset", "--name", "demo", "--images", "4")
    with pytest.raises(CommandError) as err:
        run("train", *args)
    assert reason in str(err.value) and "\n" not in str(err.value)
    assert TrainingRun.objects.count() == 0


def test_train_queues_a_run_with_the_given_parameters():
    run("make_demo_dataset", "--name", "demo", "--images", "4")
    out = run("train", "--dataset", "demo", "--epochs", "2", "--learning-rate", "0.001", "--optimizer", "SGD")
    run_ = TrainingRun.objects.get()
    assert f"Queued training run #{run_.pk}" in out
    assert run_.parameters["epochs"] == 2 and run_.parameters["optimizer"] == "SGD"


def test_train_refuses_a_dataset_without_annotations(make_dataset):
    make_dataset(name="bare", boxes=False)
    with pytest.raises(CommandError, match="no enabled annotations"):
        run("train", "--dataset", "bare")


def test_import_coco_reports_rejections(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "c.json").write_text(
        json.dumps(
            {
                "categories": [{"id": 1, "name": "waste"}],
                "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "../../etc/passwd"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}],
            }
        )
    )
    out = run("import_coco", str(tmp_path / "c.json"), str(tmp_path), "--name", "imp")
    assert "1 images, 1 annotations imported; 1 item(s) rejected" in out
    assert "outside the image folder" in out


def test_import_coco_takes_a_tools_zip_into_a_new_or_an_existing_dataset(tmp_path):
    from tests.datasets import zip_layouts

    out = run("import_coco", "--zip", str(zip_layouts.cvat(tmp_path / "cvat.zip", top="task_7/")), "--name", "z")
    assert "cvat.zip: CVAT (COCO 1.0) (task_7/annotations/instances_default.json), 4 files" in out
    assert "Dataset 'z' (#" in out and "3 images, 3 annotations imported; 0 item(s) rejected" in out
    again = run("import_coco", "--zip", str(zip_layouts.label_studio(tmp_path / "ls.zip")), "--into", "z")
    assert "0 images, 0 annotations imported; 6 item(s) rejected" in again  # the same tiles: already there
    assert "the same image is already in the dataset (tile_a.jpg)" in again
    assert Dataset.objects.get(name="z").images.count() == 3


@pytest.mark.parametrize(
    "args, reason",
    [
        (["--name", "x"], "Give a COCO file and its image folder, or --zip ARCHIVE."),
        (["--zip", "/nonexistent.zip", "--name", "x"], "/nonexistent.zip: no such file."),
        (["--zip", "ZIP", "--into", "nope"], "No dataset 'nope'."),
        (["--zip", "SLIP", "--name", "x"], "The archive is refused: '../x.png' climbs out of the archive (..)."),
    ],
)
def test_import_coco_refuses_bad_input_with_one_line(tmp_path, args, reason):
    from tests.datasets import zip_layouts

    good = zip_layouts.plain(tmp_path / "ok.zip")
    slip = zip_layouts.plain(tmp_path / "slip.zip", extra={"../x.png": b"x"})
    args = [str(good) if a == "ZIP" else str(slip) if a == "SLIP" else a for a in args]
    with pytest.raises(CommandError) as caught:
        run("import_coco", *args)
    assert str(caught.value).startswith(reason) and "\n" not in str(caught.value)
    assert not Dataset.objects.filter(name="x").exists()


def _retina_checkpoint(path, classes=("a", "b")):
    """A real checkpoint of the tiny preset's model for ``classes`` (random weights)."""
    from tests.zoo import build_model

    state = build_model("retinanet_r18_tiny", len(classes)).state_dict()
    torch.save({"state_dict": state, "meta": {"dataset_meta": {"classes": list(classes)}}}, path)
    return state


def test_register_base_model_and_publish_it(tmp_path):
    state = _retina_checkpoint(tmp_path / "w.pth")
    out = run("register_base_model", str(tmp_path / "w.pth"), "--name", "base", "--architecture", "retinanet_r18_tiny")
    model = TrainedModel.objects.get()
    assert f"Registered model #{model.pk}" in out and "(from meta.dataset_meta.classes)" in out
    assert model.origin == "registered" and model.class_names == ["a", "b"]
    assert model.parameter_count == sum(
        t.numel() for k, t in state.items() if "running_" not in k and "num_batches" not in k
    )
    # Stored with the preset's runnable config for its classes, which the Python config for MMDetection comes from.
    config = json.loads(Path(model.config.path).read_text())
    assert config["model"]["bbox_head"]["num_classes"] == 2
    assert config["test_dataloader"]["dataset"]["metainfo"]["classes"] == ["a", "b"]
    assert model.checkpoint.name.startswith(f"models/{model.artifact_key}/")
    run("publish_model", str(model.pk))
    model.refresh_from_db()
    assert model.is_published and model.published_at
    run("publish_model", str(model.pk), "--unpublish")
    model.refresh_from_db()
    assert not model.is_published


@pytest.mark.parametrize(
    "setup, reason",
    [
        (lambda p: p.write_bytes(b"garbage"), "Refused the checkpoint: not a PyTorch checkpoint"),
        (lambda p: p.write_bytes(b"PK\x03\x04garbage"), "not a loadable weights-only checkpoint"),
        (lambda p: _retina_checkpoint(p, ("a", "b", "c")), "predicts 3 classes but 2 class names"),
    ],
)
def test_register_base_model_refuses_bad_checkpoints(tmp_path, setup, reason, settings):
    setup(tmp_path / "w.pth")
    artifacts = settings.MEDIA_ROOT / "models"
    before = set(artifacts.iterdir()) if artifacts.exists() else set()
    with pytest.raises(CommandError, match=reason):
        run(
            "register_base_model",
            str(tmp_path / "w.pth"),
            "--name",
            "x",
            "--architecture",
            "retinanet_r18_tiny",
            "--classes",
            "a,b",
        )
    assert TrainedModel.objects.count() == 0
    assert (set(artifacts.iterdir()) if artifacts.exists() else set()) == before


def test_publishing_a_model_of_a_failed_run_is_refused(make_dataset):
    run_ = TrainingRun.objects.create(name="r", dataset=make_dataset(), status="failed")
    model = TrainedModel.objects.create(
        name="m",
        source_run=run_,
        architecture="retinanet_r18_tiny",
        class_names=["waste"],
        artifact_key="k",
        checkpoint="c",
        config="c",
        checkpoint_sha256="0",
        config_sha256="0",
    )
    with pytest.raises(CommandError, match="Only models of succeeded runs"):
        run("publish_model", str(model.pk))
    model.refresh_from_db()
    assert not model.is_published


def test_tile_orthophoto_cuts_tiles_and_refuses_a_crs_less_file_in_one_line(tmp_path):
    from tests.datasets.geo_files import tiff_without_crs, write_geotiff

    ortho = write_geotiff(
        tmp_path / "area.tif", srid=32633, origin=(500000.0, 5100000.0), scale=(0.5, -0.5), size=(300, 200)
    )
    ring = [
        [500010.0, 5099950.0],
        [500040.0, 5099950.0],
        [500040.0, 5099980.0],
        [500010.0, 5099980.0],
        [500010.0, 5099950.0],
    ]
    sites = tmp_path / "sites.geojson"
    sites.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "EPSG:32633"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"class": "waste"},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            }
        )
    )
    out = run(
        "tile_orthophoto",
        str(ortho),
        "--annotations",
        str(sites),
        "--name",
        "tiles",
        "--tile-size",
        "128",
        "--overlap",
        "0",
        "--background-ratio",
        "1",
    )
    # 300 x 200 px in 128 px tiles: columns at 0, 128, 172 and rows at 0, 72: six windows. The site (pixels 20..80
    # by 40..100) lies whole in the first row's first tile and 47 % in the second row's.
    assert "Dataset 'tiles' (#" in out and "6 tiles (2 with sites, 4 background), 2 boxes; of 6 windows" in out
    dataset = Dataset.objects.get(name="tiles")
    assert dataset.images.exclude(footprint=None).count() == 6
    with pytest.raises(CommandError) as caught:
        run("tile_orthophoto", str(tiff_without_crs(tmp_path / "n.tif")), "--annotations", str(sites), "--name", "n")
    assert "n.tif has no coordinate reference system (CRS)" in str(caught.value) and "\n" not in str(caught.value)
    assert not Dataset.objects.filter(name="n").exists()
