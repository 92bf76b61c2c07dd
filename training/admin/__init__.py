"""The training runs' admin: the run list and page (``runs``, ``columns``), and the start, evaluate and compare
pages (``pages``, ``forms``)."""

from . import runs  # noqa: F401 - importing the module registers its pages
