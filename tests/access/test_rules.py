"""``visible`` answers exactly what guardian's ``get_objects_for_user`` answers, with its leaner filter."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User
from guardian.shortcuts import assign_perm, get_objects_for_user

from access.rules import visible
from datasets.models import Dataset
from training.models import TrainingRun


@pytest.fixture
def permission_cases(make_dataset):
    dataset = make_dataset(name="d", images=1)
    other = make_dataset(name="e", images=1)
    runs = [TrainingRun.objects.create(name=f"r{i}", dataset=dataset, parameters={}) for i in range(4)]
    crew = Group.objects.create(name="crew")
    users = {
        "root": User.objects.create_superuser("root"),
        "global": User.objects.create_user("global"),
        "own": User.objects.create_user("own"),
        "crew member": User.objects.create_user("member"),
        "both": User.objects.create_user("both"),
        "nobody": User.objects.create_user("nobody"),
        "inactive": User.objects.create_user("inactive", is_active=False),
    }
    users["global"].user_permissions.add(Permission.objects.get(codename="view_trainingrun"))
    assign_perm("training.view_trainingrun", users["own"], runs[0])
    assign_perm("training.change_trainingrun", users["own"], runs[1])  # another permission: not a view
    assign_perm("training.view_trainingrun", crew, runs[2])
    users["crew member"].groups.add(crew)
    users["both"].groups.add(crew)
    assign_perm("training.view_trainingrun", users["both"], runs[3])
    assign_perm("training.view_trainingrun", users["inactive"], runs[0])
    assign_perm("datasets.view_dataset", users["own"], other)
    return users, runs


@pytest.mark.parametrize(
    "who, expected",
    [
        ("root", {0, 1, 2, 3}),
        ("global", {0, 1, 2, 3}),
        ("own", {0}),
        ("crew member", {2}),
        ("both", {2, 3}),
        ("nobody", set()),
        ("inactive", set()),
    ],
)
def test_visible_matches_guardian(permission_cases, who, expected):
    users, runs = permission_cases
    user = User.objects.get(pk=users[who].pk)  # fresh permission caches
    ours = set(visible(user, "training.view_trainingrun", TrainingRun.objects.all()))
    assert ours == {runs[i] for i in expected}
    if user.is_active:
        assert ours == set(
            get_objects_for_user(
                user,
                "training.view_trainingrun",
                klass=TrainingRun.objects.all(),
                accept_global_perms=True,
                with_superuser=True,
            )
        )


def test_visible_keeps_the_queryset_filters_and_refuses_a_foreign_permission(permission_cases):
    users, runs = permission_cases
    both = User.objects.get(pk=users["both"].pk)
    assert list(visible(both, "training.view_trainingrun", TrainingRun.objects.filter(name="r3"))) == [runs[3]]
    assert [d.name for d in visible(users["own"], "datasets.view_dataset", Dataset.objects.all())] == ["e"]
    with pytest.raises(ValueError):
        visible(both, "datasets.view_dataset", TrainingRun.objects.all())
