from django.db import migrations


def apply_roles(apps, schema_editor):
    from dumpsite.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0002_alter_trainingrun_options_trainingrun_retry_of_and_more"),
        ("datasets", "0002_alter_dataset_options_datasetgroupobjectpermission_and_more"),
        ("models_registry", "0003_alter_trainedmodel_options_and_more"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
