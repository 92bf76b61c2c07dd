"""The datasets' admin: datasets, their images and boxes (``datasets``), and uploads (``imports``)."""

from . import datasets, imports  # noqa: F401 - importing a module registers its pages
