"""Fixtures of the attacker's probes."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient


@pytest.fixture
def admin_api(roles) -> APIClient:
    """An API client signed in as an Administrator: the attacker holds every right, and still gets nothing."""
    admin = User.objects.create_user("probe-admin")
    admin.groups.add(Group.objects.get(name="Administrator"))
    client = APIClient()
    client.force_authenticate(admin)
    return client
