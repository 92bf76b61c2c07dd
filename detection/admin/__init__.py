"""The detection room's admin: detection runs (start one from a model's page, watch it, its map and its figures
against the known sites: ``runs``, ``figures``, ``forms``) and the list of what they found (``detections``)."""

from . import detections, runs  # noqa: F401 - importing a module registers its pages
