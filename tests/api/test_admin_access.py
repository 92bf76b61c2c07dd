"""The admin applies the API's visibility and object checks."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def staff_client(world, role):
    user = world.users[role]
    user.is_staff = True
    user.save()
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("role, sees_run, sees_model", [
    ("owner", True, True), ("other_trainer", False, False), ("viewer", False, False), ("publisher", True, True),
    ("admin", True, True),
])
def test_admin_lists_and_pages_follow_visibility(world, role, sees_run, sees_model):
    client = staff_client(world, role)
    runs = client.get("/admin/training/trainingrun/")
    assert runs.status_code == 200
    assert (f"/admin/training/trainingrun/{world.run.pk}/change/" in runs.content.decode()) is sees_run
    detail = client.get(f"/admin/training/trainingrun/{world.run.pk}/change/")
    assert (detail.status_code == 200) is sees_run
    models = client.get("/admin/models_registry/trainedmodel/").content.decode()
    assert (f"/admin/models_registry/trainedmodel/{world.model.pk}/change/" in models) is sees_model
    assert f"/admin/models_registry/trainedmodel/{world.published.pk}/change/" in models


def test_admin_object_edits_need_the_object_permission(world):
    owner, peer = staff_client(world, "owner"), staff_client(world, "publisher")
    url = f"/admin/models_registry/trainedmodel/{world.model.pk}/change/"
    assert owner.post(url, {"name": "renamed by owner", "description": ""}).status_code == 302
    world.model.refresh_from_db()
    assert world.model.name == "renamed by owner"
    assert peer.post(url, {"name": "renamed by peer", "description": ""}).status_code == 403
    world.model.refresh_from_db()
    assert world.model.name == "renamed by owner"
