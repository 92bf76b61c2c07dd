"""The dataset admin: thumbnails only for datasets the user may see."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def staff_client(world, role):
    return world.staff_client(role)


def test_thumbnails_are_served_only_for_visible_datasets(world):
    from django.contrib.auth.models import User

    from datasets.models import DatasetImage

    image = DatasetImage.objects.filter(dataset=world.dataset).first()
    url = f"/datasets/images/{image.pk}/thumbnail.jpg"
    viewer = staff_client(world, "viewer")
    response = viewer.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert response.content[:2] == b"\xff\xd8"
    nobody = Client()
    nobody.force_login(User.objects.create_user("nobody"))
    assert nobody.get(url).status_code == 404
    assert Client().get(url).status_code == 302  # to the login page


def test_a_coco_zip_is_uploaded_in_the_admin_and_its_import_followed_there(world, tmp_path):
    from datasets.import_execution import dataset_import_execute
    from datasets.models import DatasetImport
    from tests.datasets import zip_layouts

    admin = staff_client(world, "admin")
    listing = admin.get("/admin/datasets/dataset/").content.decode()
    assert 'id="import-zip"' in listing
    page = admin.get("/admin/datasets/dataset/import/")
    assert page.status_code == 200 and b'enctype="multipart/form-data"' in page.content

    # A refusal shows on the form, and nothing is queued.
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with open(bad, "rb") as fh:
        refused = admin.post("/admin/datasets/dataset/import/", {"archive": fh, "dataset_name": "x"})
    assert refused.status_code == 200 and "not a zip archive" in refused.content.decode()
    assert not DatasetImport.objects.filter(new_dataset_name="x").exists()

    archive = zip_layouts.label_studio(tmp_path / "ls.zip")
    with open(archive, "rb") as fh:
        response = admin.post("/admin/datasets/dataset/import/", {"archive": fh, "dataset_name": "from the admin"})
    job = DatasetImport.objects.get(new_dataset_name="from the admin")
    assert response.status_code == 302 and response["Location"].endswith(
        f"/admin/datasets/datasetimport/{job.pk}/change/"
    )
    queued = admin.get(response["Location"]).content.decode()
    assert f'data-url="/api/dataset-imports/{job.pk}/" data-status="queued"' in queued
    assert "Label Studio (COCO)" in queued

    dataset_import_execute(import_id=job.pk)
    done = admin.get(response["Location"]).content.decode()
    assert 'data-status="succeeded"' in done and "3 of 3 images" in done and "from the admin" in done

    # Another staff user without the right sees neither the page nor the import.
    viewer = staff_client(world, "viewer")
    assert viewer.get("/admin/datasets/dataset/import/").status_code == 403
    assert 'id="import-zip"' not in viewer.get("/admin/datasets/dataset/").content.decode()
    hidden = viewer.get(f"/admin/datasets/datasetimport/{job.pk}/change/")
    assert hidden.status_code == 302 and "ls.zip" not in hidden.content.decode()  # "does not exist", to the index
    assert "ls.zip" not in viewer.get("/admin/datasets/datasetimport/").content.decode()
    assert "ls.zip" in admin.get("/admin/datasets/datasetimport/").content.decode()
