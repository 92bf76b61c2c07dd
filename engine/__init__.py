"""Everything that speaks MMDetection. No module here imports Django.

``presets``, ``params``, ``config``, ``events``, ``job``, ``inspect`` and ``supervisor`` are plain Python and safe
to import anywhere. ``child``, ``vis_backend``, ``progress_hook`` and ``checkpoints`` import torch / mmengine /
mmdet and run only in the training child process (``python -m engine.child``) or the checkpoint
inspection child (``python -m engine.inspect``); ``supervisor`` starts and watches the former.
"""
