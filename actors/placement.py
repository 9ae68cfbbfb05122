"""The Ray resources the engine pool and the trainer ask for, and a dry run of them.

One place says what each engine bundle and each trainer worker reserves; the engine pool and
the trainer both read it, and so does :func:`simulate`, which places a config on a simulated
cluster (``ray.cluster_utils.Cluster``: one process per fake node, logical GPUs) with
stand-in actors instead of engines and trainer workers. Ray's own scheduler decides where
everything goes, exactly as it would on the real cluster, so ``selfevo plan --simulate``
shows the node of every engine and worker and the GPU ids each got, before any GPU is rented.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import ray
from ray.util.placement_group import placement_group, placement_group_table
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from selfevo.config import SelfEvoConfig

# Ray Train's default for the trainer's worker group (ScalingConfig.placement_strategy).
TRAINER_STRATEGY = "PACK"
ENGINE_STRATEGY = "PACK"


def engine_bundle(config: SelfEvoConfig) -> dict[str, float]:
    """One engine's bundle: its CPUs, and ``tensor_parallel_size`` GPUs on a GPU cluster.

    Engines take GPUs when the cluster has them (``cluster.gpus_per_node``) and the backend is
    not ``hf``; ``auto`` is then resolved inside the engine actor, which sees its GPUs.
    """
    bundle = {"CPU": float(config.engine.cpus_per_engine)}
    if config.engine.backend.value != "hf" and config.cluster.gpus_per_node > 0:
        bundle["GPU"] = float(config.engine.tensor_parallel_size)
    return bundle


def trainer_worker_resources(config: SelfEvoConfig) -> dict[str, float]:
    """What each Ray Train worker reserves (``ScalingConfig.resources_per_worker``)."""
    resources = {"CPU": float(config.train.cpus_per_worker)}
    if config.train.use_gpu:
        resources["GPU"] = 1.0
    return resources


def reserve(
    bundles: list[dict[str, float]], strategy: str, what: str, timeout_s: float, name: str = ""
) -> Any:
    """A ready placement group, or a RuntimeError naming what could not be placed.

    A named group replaces one of the same name left behind: Ray removes a group when its job
    ends, not when the actor that made it dies, so a run's coordinator that crashed would
    otherwise hold its engines' CPUs and GPUs until the resumed run starved for them.
    """
    if name:
        with contextlib.suppress(ValueError):  # ValueError: no group of that name
            ray.util.remove_placement_group(ray.util.get_placement_group(name))
    group = placement_group(bundles, strategy=strategy, name=name)
    try:
        ray.get(group.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        ray.util.remove_placement_group(group)
        raise RuntimeError(
            f"could not place {what} ({len(bundles)} x {bundles[0]}) within {timeout_s:.0f}s: "
            f"the cluster has {ray.cluster_resources()}, free {ray.available_resources()}"
        ) from None
    return group


@ray.remote
class StandIn:
    """Holds a bundle's resources like an engine or trainer worker would, and says where."""

    def where(self) -> dict[str, Any]:
        context = ray.get_runtime_context()
        return {"node_id": context.get_node_id(), "gpu_ids": sorted(map(int, ray.get_gpu_ids()))}


def _stand_ins(group: Any, bundles: list[dict[str, float]]) -> list[dict[str, Any]]:
    actors = [
        StandIn.options(
            num_cpus=bundle.get("CPU", 0),
            num_gpus=bundle.get("GPU", 0),
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=index
            ),
        ).remote()
        for index, bundle in enumerate(bundles)
    ]
    return ray.get([actor.where.remote() for actor in actors])


def simulate(config: SelfEvoConfig, timeout_s: float = 120.0) -> dict[str, Any]:
    """Place ``config``'s engine pool and trainer on a simulated cluster of its shape.

    Returns, for every engine and trainer worker, the index of the node it landed on and its
    GPU ids, plus the GPUs reserved per node. The simulated cluster is torn down after.
    """
    from ray.cluster_utils import Cluster

    cluster_cfg = config.cluster
    cpus_per_node = cluster_cfg.cpus_per_node or 1024
    head = {"num_cpus": 1, "num_gpus": 0, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    nodes = [
        cluster.add_node(num_cpus=cpus_per_node, num_gpus=cluster_cfg.gpus_per_node)
        for _ in range(cluster_cfg.num_nodes)
    ]
    node_index = {node.node_id: index for index, node in enumerate(nodes)}
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        engine_bundles = [engine_bundle(config)] * config.engine.num_engines
        worker_bundles = [trainer_worker_resources(config)] * config.train.num_workers
        engines_pg = reserve(engine_bundles, ENGINE_STRATEGY, "the engine pool", timeout_s)
        trainer_pg = reserve(worker_bundles, TRAINER_STRATEGY, "the trainer", timeout_s)
        report = {
            "engines": _stand_ins(engines_pg, engine_bundles),
            "trainer_workers": _stand_ins(trainer_pg, worker_bundles),
        }
        bundle_nodes = {
            name: placement_group_table(group)["bundles_to_node_id"]
            for name, group in (("engines", engines_pg), ("trainer_workers", trainer_pg))
        }
    finally:
        ray.shutdown()
        cluster.shutdown()
    reserved: Counter[int] = Counter()
    for name, bundles in (("engines", engine_bundles), ("trainer_workers", worker_bundles)):
        for index, placed in enumerate(report[name]):
            placed["node"] = node_index.get(placed.pop("node_id"), -1)
            placed["bundle_node"] = node_index.get(bundle_nodes[name][index], -1)
            reserved[placed["node"]] += int(bundles[index].get("GPU", 0))
    report["gpus_reserved_per_node"] = [reserved[i] for i in range(len(nodes))]
    return report
