"""The registry's admin: trained models (``trained_models``, ``columns``), their evaluations' results
(``evaluations``) and predict checks (``predictions``)."""

from . import evaluations, predictions, trained_models  # noqa: F401 - importing a module registers its pages
