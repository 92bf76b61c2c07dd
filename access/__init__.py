"""Access control, in one place: who may see and do what (``rules``: global and per-object permission checks, the
visibility filter, the one lookup interfaces use), the role groups (``roles``), the migration that applies them
and ``manage.py sync_roles``."""
