"""Small shared helpers: atomic writes, reading JSON files, learning-curve plots, grouping scenes by compiled topology."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any


def _create_temp(directory: Path, prefix: str, suffix: str) -> str:
    """Create a new empty file ``directory/prefix<random>suffix`` with a plain ``open()``'s mode; return its path.

    ``tempfile.mkstemp`` creates its file 0600 and the mode survives the rename, so shared datasets,
    videos and JSON ended up private. Instead the file is created here with ``O_CREAT | O_EXCL`` and
    mode 0o666, which the kernel masks with the process umask (and the folder's default ACL) at
    creation, exactly as ``open(path, "w")`` would. This never reads the umask: reading it with
    ``os.umask(0); os.umask(old)`` briefly changes it for every thread of the process, and
    /proc/self/status is Linux-only. ``O_EXCL`` makes the name ours alone, as in mkstemp.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = str(directory / f"{prefix}{secrets.token_hex(4)}{suffix}")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name {prefix}*{suffix} in {directory}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a temp path next to `path`; on success rename it over `path`, on any error delete it.

    Readers never see a partial file, and an existing file survives a failed write. The temp file
    (hence the result) gets the mode a plain ``open()`` gives a new file: 0o666 less the umask,
    e.g. 0644 under umask 022. Writers that reopen ``tmp`` for writing (h5py, ffmpeg, savefig) keep it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path.parent, f".{path.name}.", suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: str | os.PathLike, error: type[Exception] = ValueError) -> Any:
    """The parsed contents of a JSON file; `error("<path>: not valid JSON (<why>)")` when it is not JSON
    (a missing file raises FileNotFoundError: callers say what the file should have been)."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not valid JSON (not UTF-8 text: {e})") from None


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically (temp file in the same folder, then rename)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
    return Path(path)


def plot_curve(path, values, *, title: str, ylabel: str, xlabel: str = "step", log: bool = False, smooth: int = 50):
    """Save a learning curve (raw and moving average) as a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(values, alpha=0.35, lw=0.8, label="raw")
    if values.size > smooth:
        kernel = np.ones(smooth) / smooth
        ax.plot(np.arange(smooth - 1, values.size), np.convolve(values, kernel, mode="valid"), lw=1.5, label=f"mean of {smooth}")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return Path(path)


def topology_indices(task: str, specs) -> dict[tuple, list[int]]:
    """{((role, representative object id), ...): [indices into specs]}: scenes that can share one compiled env,
    groups in order of first appearance, each group's scenes in their order."""
    from dexfly.catalog import load_catalog

    cat = load_catalog()
    groups: dict[tuple, list[int]] = {}
    reps: dict[tuple, tuple] = {}
    for k, spec in enumerate(specs):
        topo = cat.scene_topology(spec.objects)
        reps.setdefault(topo, spec.objects)
        groups.setdefault(reps[topo], []).append(k)
    return groups


def group_by_topology(task: str, specs):
    """{((role, representative object id), ...): [specs]}: scenes that can share one compiled env."""
    specs = list(specs)
    return {key: [specs[k] for k in idx] for key, idx in topology_indices(task, specs).items()}


def memory_mappings() -> tuple[int, int] | None:
    """(memory mappings this process holds, the kernel's limit vm.max_map_count), or None off Linux."""
    try:
        with open("/proc/self/maps") as f:
            count = sum(1 for _ in f)
        limit = int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return None
    return count, limit


def release_compiled() -> None:
    """Drop every compiled XLA program this process holds (`jax.clear_caches`); later calls recompile or load from
    the persistent compilation cache (seconds).

    Why: each loaded XLA:CPU executable keeps memory mappings of its own (a few hundred for an MJX rollout), and a
    process that keeps compiling new programs reaches the kernel's limit (vm.max_map_count, 65530 by default),
    where XLA crashes the process (a segfault or abort while compiling or loading a program; seen in the test
    suite at about 10 GB). Long jobs call this between stages, the tests between modules.
    """
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
