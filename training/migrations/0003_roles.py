"""Historical. The role groups are applied by the access app's migration (``access.0001_roles``), which runs once
every app's permissions exist; this step is kept so that migration histories stay as they are."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0002_alter_trainingrun_options_trainingrun_retry_of_and_more"),
        ("datasets", "0002_alter_dataset_options_datasetgroupobjectpermission_and_more"),
        ("models_registry", "0003_alter_trainedmodel_options_and_more"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = []
