"""Joining or starting a Ray cluster; the only module of the pack that imports ``ray`` (the
``ray`` extra), and only when a Ray batch runs (:func:`import_ray`)."""

from __future__ import annotations

import os
import sys
from typing import Any

from ..errors import MissingDependencyError, SadTalkerError

LOOPBACK = "127.0.0.1"


def import_ray(address: str | None = "local") -> Any:
    """``ray``, imported with usage statistics off and, for a cluster of this process
    (``local``), its node kept on the loopback interface (Ray otherwise swaps 127.0.0.1 for
    the machine's routable address, as it must for a cluster of several nodes).

    Raises:
        MissingDependencyError: ray is not installed.
    """
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address in (None, "local"):
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as e:
        raise MissingDependencyError(
            "ray", "Running a batch on Ray (--ray; the pack's extra: pip install .[ray])"
        ) from e
    return ray


def is_loopback(address: str | None) -> bool:
    if address in (None, "local"):
        return True
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def connect(address: str | None = "local", num_cpus: int | None = None) -> bool:
    """Join (``ADDRESS`` / ``auto``: the cluster ``ray start`` made) or start (``local``) a Ray
    cluster, without dashboard or usage statistics. Returns True when this call connected
    (the caller then disconnects with ``ray.shutdown()``); False when this process already was.
    """
    ray = import_ray(address)
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if is_loopback(address):
        options["_node_ip_address"] = LOOPBACK
    if address in (None, "local"):
        ray.init(address="local", num_cpus=num_cpus, **options)
    else:
        try:
            ray.init(address=address, **options)
        except ConnectionError as e:
            raise SadTalkerError(
                f"No Ray cluster at '{address}' ({e}). Start one with `ray start --head` (README, "
                "Many machines), or use --ray local for a cluster on this machine only."
            ) from e
    return True
