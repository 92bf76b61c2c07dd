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
