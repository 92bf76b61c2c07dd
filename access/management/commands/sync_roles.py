from django.core.management.base import BaseCommand

from access.roles import ROLES, sync_roles


class Command(BaseCommand):
    help = "Create the role groups (Viewer, Trainer, Publisher, Administrator) and reset their permissions."

    def handle(self, *args, **options):
        sync_roles()
        self.stdout.write(self.style.SUCCESS(f"Roles in place: {', '.join(ROLES)}."))
