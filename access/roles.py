"""Role groups and their global permissions. Applied by a data migration and by ``manage.py sync_roles``.

Object permissions come on top: the creator of a dataset, run or model gets the object permissions listed in
``CREATOR_PERMS``. A run is private to its creator (and whoever it is shared with) unless the user's role sees
all runs.
"""

ROLES: dict[str, list[str]] = {
    # Looks at datasets and published models.
    "Viewer": [
        "datasets.view_dataset",
        "models_registry.view_published_trainedmodel",
        "models_registry.view_trainedmodel_statistics",
        "notifications.add_webhooksubscription",
    ],
    # Trains on datasets and sees its own runs and models (object permissions as their creator).
    "Trainer": [
        "datasets.view_dataset",
        "datasets.use_dataset",
        "training.add_trainingrun",
        "models_registry.view_published_trainedmodel",
        "models_registry.view_trainedmodel_statistics",
        "models_registry.predict_trainedmodel",
        "detection.run_detection",
        "detection.review_detection",
        "labelling.add_labellingtask",
        "labelling.view_labellingtask",
        "notifications.add_webhooksubscription",
    ],
    # Reviews every run and model and decides what goes to production.
    "Publisher": [
        "datasets.view_dataset",
        "training.view_trainingrun",
        "training.view_trainingrun_statistics",
        "models_registry.view_trainedmodel",
        "models_registry.view_published_trainedmodel",
        "models_registry.view_trainedmodel_statistics",
        "models_registry.publish_trainedmodel",
        "models_registry.predict_trainedmodel",
        "detection.run_detection",
        "detection.review_detection",
        "labelling.add_labellingtask",
        "labelling.view_labellingtask",
        "notifications.add_webhooksubscription",
    ],
    # Everything on datasets, runs and models.
    "Administrator": [
        f"{app}.{action}_{model}"
        for app, model in (("datasets", "dataset"), ("training", "trainingrun"), ("models_registry", "trainedmodel"))
        for action in ("view", "add", "change", "delete")
    ]
    + [
        "datasets.use_dataset",
        "training.schedule_trainingrun",
        "training.view_trainingrun_statistics",
        "training.prioritize_trainingrun",
        "workers.view_worker",
        "models_registry.publish_trainedmodel",
        "models_registry.view_trainedmodel_statistics",
        "models_registry.view_published_trainedmodel",
        "models_registry.predict_trainedmodel",
        "audit.view_auditevent",
        "detection.run_detection",
        "detection.review_detection",
        "labelling.add_labellingtask",
        "labelling.view_labellingtask",
        # Every webhook subscription (to help their owners, or stop one) and the mails the platform sent.
        "notifications.add_webhooksubscription",
        "notifications.view_webhooksubscription",
        "notifications.change_webhooksubscription",
        "notifications.delete_webhooksubscription",
        "notifications.view_outgoingmail",
    ],
}

CREATOR_PERMS = {
    "dataset": ["datasets.view_dataset", "datasets.use_dataset", "datasets.change_dataset"],
    "trainingrun": [
        "training.view_trainingrun",
        "training.change_trainingrun",
        "training.delete_trainingrun",
        "training.schedule_trainingrun",
        "training.view_trainingrun_statistics",
    ],
    "trainedmodel": [
        "models_registry.view_trainedmodel",
        "models_registry.change_trainedmodel",
        "models_registry.delete_trainedmodel",
        "models_registry.view_trainedmodel_statistics",
    ],
}


def sync_roles(apps=None) -> None:
    """Create the groups and set their permissions exactly as ROLES says (idempotent)."""
    historical = apps is not None  # called from a migration: the models of the state at that point
    if apps is None:
        # Django's app loading: migrations call this with their own app registry
        from django.apps import apps as global_apps

        apps = global_apps
    # Django's app loading: migrations call this with their own app registry
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        # A migration's app registry has models_module unset, and create_permissions skips such apps; set it for
        # the call and put back what was there (the live registry must keep its real modules).
        original = getattr(app_config, "models_module", None)
        app_config.models_module = original or True
        try:
            create_permissions(app_config, verbosity=0, apps=apps)
        finally:
            app_config.models_module = original
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = []
        for perm in perms:
            app_label, codename = perm.split(".")
            found = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if found is None and historical:
                continue  # a model of a later migration (or one that moved app since): a later sync grants it
            if found is None:
                raise LookupError(f"Role {name!r} names permission {perm!r}, which does not exist.")
            wanted.append(found)
        group.permissions.set(wanted)
