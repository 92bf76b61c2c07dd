"""Writes to training runs: every state transition, one function each, and every rule, checked here.

States: queued -> running -> succeeded | failed | cancelled; queued -> cancelled. ``queueing`` is the one path by
which a run of any kind is queued; ``runs`` holds what users ask of training runs (create, cancel, retry / resume,
delete: each checks the acting user), ``evaluation_runs`` the evaluation's create; ``lifecycle`` what the worker
and the reaper do (claim, progress, finish).
"""

from .evaluation_runs import evaluation_run_create
from .export_runs import onnx_export_create
from .lifecycle import (
    training_run_child_started,
    training_run_claim,
    training_run_fail,
    training_run_fail_gone,
    training_run_fail_stale,
    training_run_progress,
    training_run_record,
    training_run_record_manifest,
    training_run_succeed,
)
from .nodes import (
    nodes_of,
    run_node_beat,
    run_node_end,
    run_node_give_up,
    run_node_hold,
    run_node_release,
    run_node_reserve,
    run_node_set_port,
)
from .queueing import TASK, training_run_enqueue
from .runs import (
    RunPlan,
    training_run_cancel,
    training_run_create,
    training_run_delete,
    training_run_plan,
    training_run_preview,
    training_run_resume,
    training_run_retry,
    training_run_validate,
)

__all__ = [
    "TASK",
    "nodes_of",
    "run_node_beat",
    "run_node_end",
    "run_node_give_up",
    "run_node_hold",
    "run_node_release",
    "run_node_reserve",
    "run_node_set_port",
    "RunPlan",
    "evaluation_run_create",
    "onnx_export_create",
    "training_run_cancel",
    "training_run_child_started",
    "training_run_claim",
    "training_run_create",
    "training_run_delete",
    "training_run_enqueue",
    "training_run_fail",
    "training_run_fail_gone",
    "training_run_fail_stale",
    "training_run_plan",
    "training_run_preview",
    "training_run_progress",
    "training_run_record",
    "training_run_record_manifest",
    "training_run_resume",
    "training_run_retry",
    "training_run_succeed",
    "training_run_validate",
]
