"""The roles again once webhooks exist: every role may subscribe (``notifications.add_webhooksubscription``);
Administrators see, change and delete every subscription and see the mails the platform sent."""

from django.db import migrations


def apply_roles(apps, schema_editor):
    from access.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0007_roles_labelling_tasks"),
        ("notifications", "0001_initial"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
