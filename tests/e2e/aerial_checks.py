"""Checks of the aerial recipe in a real training (run by the hostile-names test): images resampled from their
footprints, trained on crops with colour jitter and all eight orientations, the first batch saved as the network saw
it and served by the API and the admin, and the model's recorded ground resolution."""

from __future__ import annotations

from django.contrib.gis.gdal import CoordTransform, SpatialReference
from django.contrib.gis.geos import Polygon

AERIAL = {
    "orientations": "all",
    "resize": "crops",
    "image_size": 160,
    "target_gsd": 0.1,
    "colour": "jitter",
    "scale_jitter": 0.2,
    "crop_box_share": 0.8,
}


def give_footprints(dataset, gsd: float = 0.05) -> int:
    """Half the images get a north-up footprint of ``gsd`` m per pixel (UTM 33), as a review would set it."""
    from datasets.models import DatasetImage

    images = list(DatasetImage.objects.filter(dataset=dataset).order_by("id"))[::2]
    to_wgs84 = CoordTransform(SpatialReference(32633), SpatialReference(4326))
    for i, image in enumerate(images):
        x0, y0 = 500_000.0 + i * 100, 5_100_000.0
        w, h = image.width * gsd, image.height * gsd
        polygon = Polygon([(x0, y0), (x0 + w, y0), (x0 + w, y0 - h), (x0, y0 - h), (x0, y0)], srid=32633)
        polygon.transform(to_wgs84)
        DatasetImage.objects.filter(pk=image.pk).update(footprint=polygon)
    return len(images)


def check_aerial_run(client, staff_client, run, model, trained_config: dict) -> None:
    """What the run did is visible, and it did what its parameters say."""
    pipeline = [step["type"] for step in trained_config["train_dataloader"]["dataset"]["pipeline"]]
    assert pipeline[2:8] == [
        "DumpsiteRescale",
        "DumpsiteBoxCrop",
        "YOLOXHSVRandomAug",
        "Contrast",
        "RandomFlip",
        "DumpsiteTranspose",
    ], pipeline
    assert trained_config["train_dataloader"]["dataset"]["type"] == "DumpsiteCocoDataset"
    assert model.gsd_m == AERIAL["target_gsd"]
    assert run.export_summary["ground_resolution"]["median_m"] < 0.051, run.export_summary

    body = client.get(f"/api/training-runs/{run.pk}/").json()
    assert body["pipeline"][0].startswith("resampled to 10 cm per pixel") and len(body["pipeline"]) >= 5
    samples = client.get(f"/api/training-runs/{run.pk}/samples/").json()
    assert samples["pipeline"] == body["pipeline"]
    pictures = samples["samples"]
    assert len(pictures) == 4  # the whole first batch (batch_size 4; the hook keeps up to 6)
    for picture in pictures:
        assert picture["width"] <= AERIAL["image_size"] and picture["height"] <= AERIAL["image_size"]
        served = client.get(picture["url"])
        assert served.status_code == 200 and served["Content-Type"] == "image/jpeg"
        assert b"".join(served.streaming_content)[:2] == b"\xff\xd8"
    assert sum(p["boxes"] for p in pictures) >= 1  # 80 % of the crops are placed around a box
    assert client.get(f"/api/training-runs/{run.pk}/samples/{len(pictures)}/").status_code == 404
    page = staff_client.get(f"/admin/training/trainingrun/{run.pk}/change/").content.decode()
    assert page.count("data:image/jpeg;base64,") == len(pictures) and 'id="pipeline"' in page
    card = client.get(f"/api/trained-models/{model.pk}/download/", {"artifact": "card"}).content.decode()
    assert "Ground resolution trained at: 10.00 cm per pixel" in card
