"""Joining Ray: the cluster a config names, the one `ray job submit` runs us in, or a local one."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import ray


def init_ray(cluster: Any, *, quiet: bool = False) -> bool:
    """Connect to ``cluster.address``, else to ``RAY_ADDRESS`` (set inside ``ray job submit``),
    else start a local Ray with ``cluster.num_cpus`` CPUs. A no-op when Ray is already up.
    Returns whether it started a local Ray (whose logs are all on this machine). Starting one,
    it sets :data:`LOCAL_TRAIN_SETTINGS` in this process's environment (for its later
    fine-tunings and child processes) where the environment has no value of its own.

    ``quiet``: the workers' output (Ray's, DeepSpeed's, the libraries', our actors' prints)
    stays in Ray's log files instead of streaming to this console, and Ray's own messages
    here are shown only when they are errors; :func:`copy_ray_logs` collects the files.
    """
    if ray.is_initialized():
        return False
    if quiet:
        _drop_benign_raylet_warnings()
    quiet_kwargs = {"log_to_driver": False, "logging_level": logging.ERROR} if quiet else {}
    if cluster.address:
        ray.init(address=cluster.address, **quiet_kwargs)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet_kwargs)
    else:
        apply_local_train_settings(os.environ)
        ray.init(num_cpus=cluster.num_cpus, include_dashboard=False, **quiet_kwargs)
        return True
    return False


# Ray Train's settings for a cluster this process starts on its own machine, where nothing
# preempts the node: no preemption watcher (an actor started at every fine-tuning, beside the
# workers' own start), and the controller polls the workers every 0.5 s instead of 2 s, so it
# sees a fine-tuning end sooner (README, "Training", has the figures).
LOCAL_TRAIN_SETTINGS = {
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}


def apply_local_train_settings(environ: MutableMapping[str, str]) -> None:
    """Set :data:`LOCAL_TRAIN_SETTINGS` where the environment does not already choose."""
    for name, value in LOCAL_TRAIN_SETTINGS.items():
        environ.setdefault(name, value)


# Raylet warnings every driver is sent whatever log_to_driver says, that ask nothing of the
# user: a 2-CPU machine starting the trainer's and Ray Data's actors trips this one.
_BENIGN_RAYLET_WARNINGS = ("PYTHON worker processes have been started",)


def _drop_benign_raylet_warnings() -> None:
    """Filter the driver's printer of raylet messages (Ray has no setting for it); every other
    raylet message, errors included, still reaches the console."""
    worker = ray._private.worker
    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "selfevo_filtered", False):
        return

    def filtered(data: dict, ignore_prefix: bool) -> None:
        lines = data.get("lines") or []
        if data.get("pid") == "raylet" and any(
            benign in line for line in lines for benign in _BENIGN_RAYLET_WARNINGS
        ):
            return
        printer(data, ignore_prefix)

    filtered.selfevo_filtered = True
    worker.print_to_stdstream = filtered


def copy_ray_logs(destination: Path) -> Path | None:
    """Copy this node's Ray logs (every process of a local cluster: worker-*.out/.err hold
    what the actors, DeepSpeed and the libraries printed) into ``destination``.

    Other nodes keep theirs; ``ray logs`` reads them. Returns the copy, or None when this
    process has no Ray node to copy from.
    """
    node = getattr(ray._private.worker, "_global_node", None)  # no public accessor in Ray 2.x
    if node is None:
        return None
    source = Path(node.get_logs_dir_path())
    if not source.is_dir():
        return None
    ignore = shutil.ignore_patterns("*.sock", "events", "export_events")
    # A file that vanished or cannot be read is skipped; the rest is copied.
    with contextlib.suppress(shutil.Error):
        shutil.copytree(source, destination, ignore=ignore, dirs_exist_ok=True)
    return destination
