"""Entry point of the training child process: ``python -m engine.child JOB_FILE``; evaluation, detection and ONNX
export jobs (``"kind"``: ``evaluate``, ``detect``, ``onnx_export``) run in the same child.

Training runs in its own process (and process group) because it holds gigabytes of tensors, can crash in native
code, must be stoppable as a whole with its data-loader workers (cancel = signal the group), and because torch and
mmdet must never be imported into the Django web or worker processes. The child reads a JSON job, merges the
config as data, trains with mmengine's Runner, appends progress events, and leaves a slim checkpoint, the merged
config (JSON) and ``result.json`` for the worker to register. Exit status 0 means all of that was written.
"""

from __future__ import annotations

import atexit
import copy
import functools
import glob
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from .config import BEST_METRIC, checkpoint_epoch, dumps_config_json, publishable_config, restore_tuples
from .detect import DetectionJob, detect
from .evaluate import DETECTIONS_PREFIX, EvaluationJob, analyse_detections, detections_file, evaluate
from .events import SAMPLES
from .job import TrainingJob
from .loading import load_json_config, resolve_base_config, write_json
from .onnx_export import OnnxExportJob, export_onnx
from .processes import is_alive, started_at

AnyJob = TrainingJob | EvaluationJob | DetectionJob | OnnxExportJob
EMITTING: dict[str, tuple[type, Any]] = {"detect": (DetectionJob, detect), "onnx_export": (OnnxExportJob, export_onnx)}


def build_config(job: TrainingJob) -> Any:
    # torch / MMDetection load only where this runs (a child process), never on import
    from mmengine.config import Config

    cfg = Config.fromfile(resolve_base_config(job.base_config))
    cfg.merge_from_dict(job.overrides)
    restore_tuples(cfg._cfg_dict)
    return cfg


def _best_checkpoint(runner: Any, work_dir: str) -> str:
    """The checkpoint CheckpointHook kept as best; the last one when no epoch produced metrics (no detections)."""
    best = runner.message_hub.get_info("best_ckpt")
    # A resumed attempt inherits the name of the attempt it resumed: that file is not this attempt's (another host's
    # scratch folder, or one being removed), so only a best checkpoint of this attempt's own folder counts.
    if best and os.path.isfile(best) and os.path.dirname(os.path.abspath(best)) == os.path.abspath(work_dir):
        return best
    candidates = glob.glob(os.path.join(work_dir, f"best_{BEST_METRIC.replace('/', '_')}_epoch_*.pth"))
    if not candidates:
        candidates = glob.glob(os.path.join(work_dir, "epoch_*.pth"))
    if candidates:
        return max(candidates, key=checkpoint_epoch)
    raise RuntimeError("training finished but no checkpoint was saved")


def apply_transfer(cfg: Any, job: TrainingJob) -> dict | None:
    """Load the base model's weights explicitly: compare them with the run's model tensor by tensor, keep what
    fits, leave the class-dependent layers to their initialisation when the classes differ, and point the config
    at the filtered checkpoint. Returns the plan (recorded on the run); None when there is no base model to load
    or the attempt resumes (its checkpoint is already the run's own)."""
    if not job.transfer or not cfg.get("load_from") or cfg.get("resume"):
        return None
    # torch / MMDetection load only where this runs (a child process), never on import
    import torch
    from mmdet.registry import MODELS

    # torch / MMDetection load only where this runs (a child process), never on import
    from .checkpoints import load_checkpoint
    from .transfer import NEW_CLASSES, plan_transfer

    model_shapes = {k: tuple(v.shape) for k, v in MODELS.build(copy.deepcopy(cfg.model)).state_dict().items()}
    state = load_checkpoint(cfg.load_from)["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    plan = plan_transfer(
        model_shapes,
        {k: tuple(v.shape) for k, v in state.items()},
        class_dependent=job.transfer.get("class_dependent") or (),
        new_classes=job.transfer.get("mode") == NEW_CLASSES,
        reason=job.transfer.get("reason") or "",
    )
    skip = {entry["key"] for entry in plan["reinitialised"]}
    kept = {k: v for k, v in state.items() if k in model_shapes and k not in skip}
    filtered = os.path.join(job.work_dir, "base_weights.pth")
    torch.save({"state_dict": kept, "meta": {"transfer": plan["mode"]}}, filtered)
    cfg.load_from = filtered
    return plan


def rank() -> int:
    """This process's rank among the run's processes (torchrun sets RANK); 0 for a single process."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its own host (torchrun sets LOCAL_RANK): on each host of a run across hosts, local
    rank 0 writes the files that host's processes read."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def check_node_rank() -> None:
    """A run across hosts: rank 0 must be node 0's (its worker alone registers what rank 0 writes). The platform
    numbers the hosts as torch's c10d rendezvous does (by address); a rendezvous that disagreed is refused here,
    before anything trains."""
    expected = os.environ.get("DUMPSITE_NODE_RANK")
    given = os.environ.get("GROUP_RANK")
    if expected is not None and given is not None and given != expected:
        raise RuntimeError(
            f"The rendezvous made this host node {given}, the platform node {expected}: the hosts' addresses "
            "(DUMPSITE_HOST_ADDRESS) must be distinct and each host's own."
        )


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _write_event(job: AnyJob, event: str, **payload: Any) -> None:
    """Progress and results come from rank 0 only; an error is reported by whichever rank met it."""
    if rank() != 0 and event != "error":
        return
    with open(job.events_file, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"event": event, "time": time.time(), **payload}) + "\n")


def init_distributed(cuda: bool) -> None:
    """Join the run's process group (torchrun's environment) before the Runner is built, so that mmengine finds it
    initialised and skips its own ``init_dist``, which calls ``torch.cuda.set_device`` even on a CPU. gloo on CPUs,
    nccl on GPUs (each rank on its own: CUDA_VISIBLE_DEVICES holds the run's GPUs, LOCAL_RANK picks one)."""
    # torch / MMDetection load only where this runs (a child process), never on import
    import torch
    import torch.distributed as dist

    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)


def distributed_config(cfg: Any, cuda: bool) -> None:
    """The runner's side of it: launcher ``pytorch``, and on a CPU ``device_ids=None`` for DistributedDataParallel
    (mmengine passes ``[LOCAL_RANK]`` unless the wrapper's config sets it, and PyTorch rejects device ids for a CPU
    module). The published config keeps none of it: how a model was trained is not how it is loaded."""
    backend = "nccl" if cuda else "gloo"
    cfg.launcher = "pytorch"
    cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = backend
    if cuda:
        cfg.sync_bn = "torch"  # batch statistics over every GPU's images, as one process would see them
    else:
        # PyTorch's SyncBatchNorm needs GPUs: on CPUs rank 0's batch-norm buffers are broadcast at every step, so
        # that every rank validates with the buffers the checkpoint keeps.
        cfg.model_wrapper_cfg = {
            "type": "MMDistributedDataParallel",
            "device_ids": None,
            "broadcast_buffers": True,
            "find_unused_parameters": False,
        }


def barrier() -> None:
    if world_size() > 1:
        # torch / MMDetection load only where this runs (a child process), never on import
        import torch.distributed as dist

        dist.barrier()


def train(job: TrainingJob) -> dict:
    # torch / MMDetection load only where this runs (a child process), never on import
    import mmdet
    import torch
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    from . import transforms  # noqa: F401 - registers this platform's transforms (DumpsiteTranspose) with mmdet

    # torch / MMDetection load only where this runs (a child process), never on import
    from .checkpoints import install_safe_globals, save_weights
    from .device import describe_device, library_versions, select_device
    from .progress_hook import KeepDetectionsHook, ProgressEventsHook, TrainingSamplesHook

    started = time.monotonic()
    device = select_device(cuda_available=torch.cuda.is_available(), amp=job.amp, wanted=job.device)
    install_safe_globals()
    register_all_modules(init_default_scope=True)
    cfg = build_config(job)
    distributed = world_size() > 1
    if distributed:
        check_node_rank()
        init_distributed(cuda=device == "cuda")
    config_file = os.path.join(job.output_dir, "config.json")
    publish_file = os.path.join(job.output_dir, "model_config.json")
    if local_rank() == 0:  # the files every rank of this host trains from: written once, read after the barrier
        os.makedirs(job.work_dir, exist_ok=True)
        os.makedirs(job.output_dir, exist_ok=True)
        transfer = apply_transfer(cfg, job)
        _write_event(job, "setup", device=describe_device(device, processes=world_size()), transfer=transfer)
        cfg.dump(config_file)
        with open(publish_file, "w", encoding="utf-8") as fh:
            fh.write(dumps_config_json(publishable_config(json.loads(json.dumps(cfg.to_dict())))))
    barrier()
    # Train from the stored JSON: the Runner dumps its config under the name it was loaded from, so it writes
    # JSON too; no Python source is ever written.
    run_cfg = load_json_config(config_file)
    if job.tracking:
        # mmengine's visualization backends: child only, and only for a run that tracks
        from .tracking import backends

        run_cfg.visualizer.vis_backends = backends({**job.tracking, "events_file": job.events_file})
    if distributed:
        distributed_config(run_cfg, cuda=device == "cuda")
    keep = None
    if job.evaluation and rank() == 0:
        # Each validation pass writes its detections here (CocoMetric's results file); the hook keeps the ones
        # of the best and the last epoch.
        run_cfg.val_evaluator["outfile_prefix"] = os.path.join(job.output_dir, DETECTIONS_PREFIX)
        keep = KeepDetectionsHook(detections_file(job.output_dir), job.output_dir, BEST_METRIC)
    runner = Runner.from_cfg(run_cfg)
    if job.progress_events and rank() == 0:
        runner.register_hook(ProgressEventsHook(job.events_file))
        runner.register_hook(TrainingSamplesHook(os.path.join(os.path.dirname(job.events_file), SAMPLES)))
    if keep is not None:
        runner.register_hook(keep)
    train_started = time.monotonic()
    runner.train()
    train_s = time.monotonic() - train_started
    if distributed:  # the checkpoints are rank 0's; the other ranks are done
        # torch / MMDetection load only where this runs (a child process), never on import
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
        if rank() != 0:
            return {}
    stopped_early = bool(getattr(runner.train_loop, "stop_training", False)) and runner.epoch < runner.max_epochs

    best = _best_checkpoint(runner, job.work_dir)
    evaluation_file = analyse_registered(keep, checkpoint_epoch(best), job) if keep is not None else None
    model_file = os.path.join(job.output_dir, "model.pth")
    params = save_weights(
        best,
        model_file,
        classes=job.classes,
        extra_meta={"mmdet_version": mmdet.__version__, "source": os.path.basename(best)},
    )
    result = {
        "model_file": model_file,
        "config_file": publish_file,
        "best_checkpoint": best,
        "checkpoint_epoch": checkpoint_epoch(best),
        "parameter_count": params,
        "classes": job.classes,
        "duration_s": round(time.monotonic() - started, 3),
        "train_s": round(train_s, 3),
        "epochs_trained": runner.epoch,
        "max_epochs": runner.max_epochs,
        "stopped_early": stopped_early,
        "patience": next(
            (h.get("patience") for h in cfg.get("custom_hooks") or [] if h.get("type") == "EarlyStoppingHook"), None
        ),
        "versions": library_versions(),
        "processes": world_size(),
        "evaluation_file": evaluation_file,
    }
    write_json(job.result_file, result)
    return result


def analyse_registered(keep: Any, epoch: int, job: TrainingJob) -> str | None:
    """Per-class analysis of the registered checkpoint on the validation split, from the detections its epoch's
    validation pass wrote (no second pass over the images). None when they were not kept (a resumed run whose
    best epoch came before the resume)."""
    detections = keep.detections_of(epoch)
    if detections is None:
        return None
    result = analyse_detections(
        job.overrides["val_dataloader"]["dataset"]["ann_file"],
        detections,
        score_threshold=(job.evaluation or {})["score_threshold"],
        iou_threshold=(job.evaluation or {})["iou_threshold"],
    )
    result["epoch"] = epoch
    path = os.path.join(job.output_dir, "evaluation.json")
    write_json(path, result)
    return path


def _record_error(job: AnyJob | None, exc: BaseException) -> None:
    if job is None:
        return
    # torch / MMDetection load only where this runs (a child process), never on import
    from .device import DeviceError
    from .transfer import TransferError

    text = str(exc).strip().splitlines()
    if isinstance(exc, DeviceError):
        message = text[0]
    elif isinstance(exc, TransferError):
        message = f"The base model cannot be loaded: {text[0]}"
    else:
        message = f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")
    if world_size() > 1:
        message = f"process {rank()} of {world_size()}: {message}"
    _write_event(job, "error", message=message[:2000])


def exit_with_parent(interval: float = 1.0) -> None:
    """End this process group when the worker that started it dies: a training without its supervisor would
    run on unwatched, and nothing would record how it ended. The supervisor is this process's parent, or, for a
    rank under torchrun, the worker named by DUMPSITE_SUPERVISOR_PID (compared with its start time, so that a new
    process reusing the pid is not taken for it)."""
    parent = os.getppid()
    supervisor = int(os.environ.get("DUMPSITE_SUPERVISOR_PID") or 0) or None
    supervisor_start = started_at(supervisor) if supervisor else None

    def watch() -> None:
        while True:
            time.sleep(interval)
            gone = os.getppid() != parent  # re-parented: the worker (or torchrun) is gone
            if supervisor_start is not None and not is_alive(supervisor, supervisor_start):
                gone, parent_name = True, supervisor
            else:
                parent_name = parent
            if gone:
                print(f"worker process {parent_name} is gone; stopping the training", file=sys.stderr, flush=True)
                os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def yield_group_cpu() -> None:
    """The supervisor starts the child in a session of its own (so that it is signalled as a group), and where the
    kernel groups processes by session (autogroup) niceness only weighs within a group: the niceness the child
    inherits from its worker would weigh against nothing but itself. So the child's group (its own, or torchrun's)
    takes that niceness too, and a training yields the CPU to the web and the database on its host."""
    nice = os.nice(0)
    if nice > 0 and os.getsid(0) in (os.getpid(), os.getppid()):
        try:
            Path("/proc/self/autogroup").write_text(str(nice))
        except OSError:  # no autogroup on this kernel, or not allowed
            pass


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m engine.child JOB_FILE", file=sys.stderr)
        return 2
    job: AnyJob | None = None
    exit_with_parent()
    yield_group_cpu()
    try:
        data = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
        if data.get("kind") == "evaluate":  # an evaluation run: the same process, watched the same way
            evaluation = EvaluationJob(**data)
            job = evaluation
            evaluate(evaluation)
        elif data.get("kind") in EMITTING:  # detection, ONNX export: the same process, watched the same way
            job_type, work = EMITTING[data["kind"]]
            job = job_type(**data)
            work(job, functools.partial(_write_event, job))
        else:
            training = TrainingJob(**data)
            job = training
            train(training)
    except BaseException as exc:  # noqa: BLE001 - report every failure, including KeyboardInterrupt/SystemExit
        traceback.print_exc()
        if "mlflow" in sys.modules:  # an MLflow run ends FAILED, not FINISHED by mlflow's own exit hook
            # only where a run tracked to MLflow (mmengine and mlflow already loaded)
            from .tracking import end_failed

            end_failed()
        _record_error(job, exc)
        return 1
    assert job is not None
    _write_event(job, "done")
    return 0


def exit_without_teardown(code: int) -> None:
    """Exit as Python would, less the finalisation of every module: after a training that took 1.4 s (torch's and
    mmengine's objects freed one by one; measured beside ``os._exit``), and the run's owner waits for it. The exit
    hooks still run first (7 ms: the logs flushed and closed, MLflow's and torch's own), then the streams are
    flushed and the process ends."""
    atexit._run_exitfuncs()  # what a normal exit runs before the teardown; CPython's, and no public equivalent
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_without_teardown(main(sys.argv))
