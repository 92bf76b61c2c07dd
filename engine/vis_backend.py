"""A local visualization backend that records the config as JSON. Child-process only (mmengine).

mmengine's LocalVisBackend insists on writing ``config.py``: the config as Python source, class names included.
Nothing here writes Python source, so this backend writes ``config.json`` beside ``scalars.json`` instead.
"""

from __future__ import annotations

import os
from typing import Any

from mmengine.registry import VISBACKENDS
from mmengine.visualization.vis_backend import LocalVisBackend, force_init_env


@VISBACKENDS.register_module(force=True)
class JsonConfigLocalVisBackend(LocalVisBackend):
    @force_init_env
    def add_config(self, config: Any, **kwargs: Any) -> None:
        config.dump(os.path.splitext(self._config_save_file)[0] + ".json")
