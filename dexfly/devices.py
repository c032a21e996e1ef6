"""Data parallelism over several devices (and hosts) with `jax.sharding`: one mesh with a batch axis.

    mesh = DeviceConfig(devices=None).mesh()     # None on a single device: every helper below is then the identity
    scenes = shard_batch(scenes, mesh)           # leading axis split over the devices: [B, ...] -> B / D per device
    params = replicate(params, mesh)             # one full copy per device
    obs = constrain_batch(obs, mesh)             # inside jit: split a batch that no sharded input determines
    records = gather(records)                    # whole batches on every process (multi-host runs)

The stages take `mesh` as an argument and shard their batch inputs; XLA (GSPMD) partitions the jitted
computation from there, inserting the collectives that reductions over the batch need (losses, gradients,
statistics). Random numbers are drawn for the whole batch as on one device (JAX's partitionable threefry, the
default), so a sharded run computes the same numbers as an unsharded one, up to the order of float reductions.
With one device, `make_mesh` returns None and the stages run exactly the code they ran before any mesh existed.

Batch sizes must be multiples of the mesh size (`check_batch` raises, naming both); evaluation pads its scene
list instead (it has no batch size to choose). See docs/multi_device.md for several hosts.

This module sits at the bottom of dexfly's layering: it imports nothing from dexfly or envs.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


@dataclass(frozen=True)
class DeviceConfig:
    """Which devices a run shards its batches over, and how processes on several hosts find each other
    (scripts nest this without a prefix: --devices, --coordinator-address, --num-processes, --process-id)."""

    devices: int | None = None
    """Local devices per process to shard batches over (None: all of them). 1 runs unsharded."""
    coordinator_address: str | None = None
    """host:port of process 0, for runs over several hosts (default: env JAX_COORDINATOR_ADDRESS; unset: one host)."""
    num_processes: int | None = None
    """Processes of a multi-host run, one per host (default: env JAX_NUM_PROCESSES)."""
    process_id: int | None = None
    """This process's index in 0..num_processes-1 (default: env JAX_PROCESS_ID)."""

    def mesh(self) -> Mesh | None:
        """Join the multi-host run if one is configured, then build the mesh (None on a single device)."""
        initialize_distributed(self)
        return make_mesh(self.devices)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def initialize_distributed(config: DeviceConfig) -> bool:
    """`jax.distributed.initialize` from the config's fields, falling back to JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES and JAX_PROCESS_ID. Nothing is configured: a single-process run (returns False).
    Must run before anything touches a device; a second call in the same process does nothing."""
    address = config.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = config.num_processes if config.num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = config.process_id if config.process_id is not None else _env_int("JAX_PROCESS_ID")
    if address is None and num_processes is None and process_id is None:
        return False
    if jax.distributed.is_initialized():
        return True
    # Values left out (None) are auto-detected by JAX on the clusters it knows (SLURM, Open MPI, ...).
    jax.distributed.initialize(coordinator_address=address, num_processes=num_processes, process_id=process_id)
    return True


def make_mesh(devices: int | None = None) -> Mesh | None:
    """A 1-D mesh (axis "batch") over the first `devices` local devices of every process (None: all of them).

    Returns None when that is a single device in all, so that one-device runs skip sharding altogether."""
    local = jax.local_devices()
    n = len(local) if devices is None else int(devices)
    if not 1 <= n <= len(local):
        hint = " (dexfly splits the CPU into DEXFLY_CPU_DEVICES devices, set before the process starts)" if local[0].platform == "cpu" else ""
        raise ValueError(f"--devices {n}: this process has {len(local)} local {local[0].platform} device(s){hint}")
    if n == 1 and jax.process_count() == 1:
        return None
    # The same number of devices from every process, in process order: each host holds a contiguous slice of a batch.
    chosen = [d for p in range(jax.process_count()) for d in [d for d in jax.devices() if d.process_index == p][:n]]
    return Mesh(np.asarray(chosen), (BATCH_AXIS,))


def size(mesh: Mesh | None) -> int:
    """Devices in the mesh (1 without one)."""
    return 1 if mesh is None else int(mesh.devices.size)


def check_batch(batch: int, mesh: Mesh | None, name: str = "batch size") -> None:
    """ValueError unless `batch` splits evenly over the mesh's devices."""
    n = size(mesh)
    if batch % n:
        raise ValueError(f"{name}={batch} does not divide over {n} devices: use a multiple of {n}, or fewer devices (--devices)")


def padding(batch: int, mesh: Mesh | None) -> int:
    """Entries to append to a batch of `batch` so that it splits evenly over the mesh (0 without one)."""
    return -batch % size(mesh)


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Axis `axis` split over the mesh, the others whole."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), BATCH_AXIS))


def _put(x, sharding: NamedSharding):
    if jax.process_count() > 1 and isinstance(x, jax.Array) and x.is_fully_addressable:
        # A process-local array (e.g. a checkpoint restored onto this host's first device) cannot be moved into a
        # sharding that spans other hosts; every process holds the same value, so it goes through host memory.
        x = np.asarray(x)
    return jax.device_put(x, sharding)


def shard_batch(tree, mesh: Mesh | None, axis: int = 0):
    """Every array leaf split along `axis` (the batch, [B, ...]) over the mesh; identity without a mesh.

    With several processes, every process passes the same whole batch and keeps the slice of its devices."""
    if mesh is None:
        return tree
    sharding = batch_sharding(mesh, axis)

    def put(x):
        check_batch(np.shape(x)[axis], mesh)
        return _put(x, sharding)

    return jax.tree.map(put, tree)


def replicate(tree, mesh: Mesh | None):
    """Every array leaf copied whole to each device of the mesh; identity without a mesh."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: _put(x, sharding), tree)


def constrain_batch(tree, mesh: Mesh | None, axis: int = 0):
    """Inside jit: keep every leaf split along `axis` over the mesh (needed where a batch is built inside the
    computation, e.g. drawn from a replicated pool, so that no sharded input tells XLA to split it)."""
    if mesh is None:
        return tree
    sharding = batch_sharding(mesh, axis)
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("dexfly_mesh", default=None)


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None):
    """Context (entered while a function is traced, inside jit or out) in which `current_mesh()` is `mesh`.

    For computations that XLA cannot split over devices and that must map themselves over them: MuJoCo Warp calls
    (`TaskEnv.batched`). jit's partitioning of everything else does not depend on it. The stages that take a mesh
    trace their env computations in it (`unroll.jit_unroll`, augmentation's executor, residual PPO's update)."""
    token = _MESH.set(mesh)
    try:
        yield mesh
    finally:
        _MESH.reset(token)


def current_mesh() -> Mesh | None:
    """The mesh of the innermost `use_mesh` (None outside one)."""
    return _MESH.get()


def gather(tree):
    """Leaves split over several processes (multi-host runs only) gathered into numpy arrays, so that every
    process sees the whole batch; every other leaf is returned as it is (so this is a no-op on one host)."""
    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return x

    return jax.tree.map(get, tree)


__all__ = ["BATCH_AXIS", "DeviceConfig", "batch_sharding", "check_batch", "constrain_batch", "current_mesh", "gather", "initialize_distributed", "make_mesh",
           "padding", "replicate", "shard_batch", "size", "use_mesh"]
