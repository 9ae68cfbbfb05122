"""Joining Ray: the cluster a config names, the one `ray job submit` runs us in, or a local one."""

from __future__ import annotations

import os
from typing import Any

import ray


def init_ray(cluster: Any) -> None:
    """Connect to ``cluster.address``, else to ``RAY_ADDRESS`` (set inside ``ray job submit``),
    else start a local Ray with ``cluster.num_cpus`` CPUs. A no-op when Ray is already up."""
    if ray.is_initialized():
        return
    if cluster.address:
        ray.init(address=cluster.address)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(num_cpus=cluster.num_cpus, include_dashboard=False)
