"""Everything that speaks MMDetection. No module here imports Django.

``presets``, ``params``, ``config`` and ``events`` are plain Python and safe to import anywhere. ``child``,
``progress_hook`` and ``checkpoints`` import torch / mmengine / mmdet and run only in the training child process
(``python -m training.engine.child``); ``supervisor`` starts and watches that process.
"""
