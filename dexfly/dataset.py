"""dexfly's demonstration dataset format: robomimic-style HDF5 ("dexfly-robomimic-v1").

See docs/dataset_format.md for the layout, shapes, dtypes and units. In short::

    /                        attr dexfly_format = "dexfly-robomimic-v1"
    /data                    attrs total, env_args (JSON), task, [extra attrs]
    /data/demo_N             attrs num_samples, success, object_ids (JSON), env_id, pose_id, seed, [source], [extra]
        actions [T,A] f32, states [T,S] f32, rewards [T] f32, dones [T] u8 (last = 1)
        obs/obj [T,do] f32, obs/prop [T,dp] f32, [obs/<other> [T,...]]
        datagen/ee_target_pose [T,n_arms,7] f32, datagen/hand_target [T,n_arms,6] f32,
        datagen/object_poses [T,n_objects,7] f32, datagen/subtask_end [T,n_arms,n_subtasks] u8
    /mask/train, /mask/valid  demo names (bytes)

Writes are atomic (a temp file in the destination folder, then ``os.replace``); reads validate the
whole file and raise ``DatasetError`` naming the file and the problem.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import h5py
import numpy as np

from dexfly.layout import obs_vector
from dexfly.utils import atomic_path

__all__ = [
    "FORMAT",
    "DatasetError",
    "Episode",
    "Dataset",
    "write_dataset",
    "read_dataset",
    "merge_datasets",
    "make_env_args",
    "with_source",
]

FORMAT = "dexfly-robomimic-v1"
ENV_TYPE = "dexfly-mjx"
_DATAGEN_KEYS = ("ee_target_pose", "hand_target", "object_poses", "subtask_end")
_REQUIRED_OBS = ("obj", "prop")


class DatasetError(ValueError):
    """A dataset file is unreadable, foreign, or fails validation; or an Episode is malformed."""


def _demo_key(name: str) -> tuple[int, str]:
    tail = name.rsplit("_", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (1 << 60, name)


@dataclass(frozen=True, eq=False)
class Episode:
    """One demonstration. Arrays are numpy, time-major (``T`` steps). ``dones`` defaults to 0...0 1."""

    actions: np.ndarray  # [T, A] float32: per arm [ee_pos(3), ee_rot6d(6), hand(6)], world frame
    states: np.ndarray  # [T, S] float32: flattened [qpos, qvel] of the simulation
    rewards: np.ndarray  # [T] float32
    obs: Mapping[str, np.ndarray]  # "obj" [T, do], "prop" [T, dp] (float32), optional extra keys [T, ...]
    ee_target_pose: np.ndarray  # [T, n_arms, 7] float32: pos(3) + quat wxyz(4), world frame
    hand_target: np.ndarray  # [T, n_arms, 6] float32: hand joint targets (rad)
    object_poses: np.ndarray  # [T, n_objects, 7] float32: pos(3) + quat wxyz(4), world frame
    subtask_end: np.ndarray  # [T, n_arms, n_subtasks] uint8: 0 -> 1 edge marks a subtask's end
    success: bool
    object_ids: tuple[str, ...]
    env_id: str
    pose_id: str
    seed: int
    source: str | None = None  # e.g. "seed", "augment", "rollout"
    dones: np.ndarray | None = None  # [T] uint8, last = 1
    extra: Mapping[str, Any] = field(default_factory=dict)  # JSON-serialisable per-demo metadata

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "actions", np.asarray(self.actions, dtype=np.float32))
        set_(self, "states", np.asarray(self.states, dtype=np.float32))
        set_(self, "rewards", np.asarray(self.rewards, dtype=np.float32))
        if not isinstance(self.obs, Mapping):
            raise DatasetError(f"Episode.obs must be a mapping of arrays, got {type(self.obs).__name__}")
        obs = {str(k): np.asarray(v, dtype=np.float32 if np.asarray(v).dtype.kind == "f" else None)
               for k, v in self.obs.items()}
        set_(self, "obs", MappingProxyType(obs))
        for k in ("ee_target_pose", "hand_target", "object_poses"):
            set_(self, k, np.asarray(getattr(self, k), dtype=np.float32))
        set_(self, "subtask_end", np.asarray(self.subtask_end).astype(np.uint8))
        set_(self, "object_ids", tuple(str(o) for o in self.object_ids))
        set_(self, "success", bool(self.success))
        set_(self, "seed", int(self.seed))
        set_(self, "env_id", str(self.env_id))
        set_(self, "pose_id", str(self.pose_id))
        if self.dones is None:
            d = np.zeros(len(self.actions), np.uint8)
            if len(d):
                d[-1] = 1
            set_(self, "dones", d)
        else:
            set_(self, "dones", np.asarray(self.dones).astype(np.uint8))
        set_(self, "extra", MappingProxyType(dict(self.extra)))
        problems = self.problems()
        if problems:
            raise DatasetError("invalid Episode: " + "; ".join(problems))

    @property
    def num_samples(self) -> int:
        return int(self.actions.shape[0])

    @property
    def n_arms(self) -> int:
        return int(self.ee_target_pose.shape[1])

    def problems(self) -> list[str]:
        """Shape/dtype/finiteness problems (empty when valid)."""
        out: list[str] = []
        T = self.actions.shape[0] if self.actions.ndim >= 1 else -1
        if self.actions.ndim != 2:
            out.append(f"actions must be [T, A], got shape {self.actions.shape}")
        if T < 1:
            out.append("episode has no steps (T = 0)")
        expect = {
            "states": (self.states, 2, None),
            "rewards": (self.rewards, 1, None),
            "dones": (self.dones, 1, None),
            "datagen/ee_target_pose": (self.ee_target_pose, 3, 7),
            "datagen/hand_target": (self.hand_target, 3, 6),
            "datagen/object_poses": (self.object_poses, 3, 7),
            "datagen/subtask_end": (self.subtask_end, 3, None),
        }
        for k in _REQUIRED_OBS:
            if k not in self.obs:
                out.append(f"missing obs/{k}")
            else:
                expect[f"obs/{k}"] = (self.obs[k], 2, None)
        for k, v in self.obs.items():
            if k not in _REQUIRED_OBS:
                expect[f"obs/{k}"] = (v, None, None)
        for name, (arr, ndim, last) in expect.items():
            if ndim is not None and arr.ndim != ndim:
                out.append(f"{name} must have {ndim} dims, got shape {arr.shape}")
                continue
            if arr.ndim == 0 or arr.shape[0] != T:
                out.append(f"inconsistent lengths: {name} has {arr.shape[0] if arr.ndim else 0} steps "
                           f"but actions has {T}")
            if last is not None and arr.shape[-1] != last:
                out.append(f"{name} last dim must be {last}, got shape {arr.shape}")
        if not out:
            n_arms = {self.ee_target_pose.shape[1], self.hand_target.shape[1], self.subtask_end.shape[1]}
            if len(n_arms) != 1:
                out.append(f"n_arms differs across datagen arrays: ee_target_pose {self.ee_target_pose.shape}, "
                           f"hand_target {self.hand_target.shape}, subtask_end {self.subtask_end.shape}")
            if self.object_poses.shape[1] != len(self.object_ids):
                out.append(f"datagen/object_poses has {self.object_poses.shape[1]} objects but object_ids "
                           f"lists {len(self.object_ids)}")
            if T >= 1 and self.dones[-1] != 1:
                out.append("dones[-1] must be 1")
            finite = {"actions": self.actions, "states": self.states, "rewards": self.rewards,
                      **{f"obs/{k}": v for k, v in self.obs.items() if v.dtype.kind == "f"},
                      "datagen/ee_target_pose": self.ee_target_pose, "datagen/hand_target": self.hand_target,
                      "datagen/object_poses": self.object_poses}
            for name, arr in finite.items():
                bad = ~np.isfinite(arr)
                if bad.any():
                    idx = np.argwhere(bad)[0].tolist()
                    out.append(f"{name} contains NaN/inf ({int(bad.sum())} values, first at index {idx})")
        return out


@dataclass(frozen=True, eq=False)
class Dataset:
    task: str
    env_args: Mapping[str, Any]  # {"env_name": task, "type": "dexfly-mjx", "env_kwargs": {...}}
    episodes: tuple[Episode, ...]
    demo_names: tuple[str, ...]  # names in the file, parallel to episodes
    masks: Mapping[str, tuple[str, ...]]  # "train"/"valid" (+ any others) -> demo names
    attrs: Mapping[str, Any] = field(default_factory=dict)  # extra attrs of /data
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def total(self) -> int:
        return sum(e.num_samples for e in self.episodes)

    def split(self, name: str) -> tuple[Episode, ...]:
        """Episodes of a mask (e.g. "train", "valid")."""
        if name not in self.masks:
            raise DatasetError(f"{self.path}: no mask {name!r}; masks: {sorted(self.masks)}")
        idx = {n: i for i, n in enumerate(self.demo_names)}
        return tuple(self.episodes[idx[n]] for n in self.masks[name])

    def train_episodes(self) -> tuple[Episode, ...]:
        return self.split("train")

    def valid_episodes(self) -> tuple[Episode, ...]:
        return self.split("valid")


def make_env_args(task: str, env_args: Mapping[str, Any] | None) -> dict[str, Any]:
    """Normalise ``env_args``: a full robomimic dict (with ``env_kwargs``) or just the env kwargs."""
    env_args = dict(env_args or {})
    if "env_kwargs" in env_args:
        out = dict(env_args)
        out.setdefault("env_name", task)
        out.setdefault("type", ENV_TYPE)
    else:
        out = {"env_name": task, "type": ENV_TYPE, "env_kwargs": env_args}
    if out["env_name"] != task:
        raise DatasetError(f"env_args env_name {out['env_name']!r} differs from task {task!r}")
    return out


def _json_attr(v: Any) -> Any:
    if isinstance(v, (str, bool, int, float, np.integer, np.floating, np.bool_)):
        return v
    return json.dumps(v)


def _split_masks(names: Sequence[str], train_fraction: float, seed: int) -> dict[str, list[str]]:
    if not 0.0 <= train_fraction <= 1.0:
        raise DatasetError(f"train_fraction must be in [0, 1], got {train_fraction}")
    n = len(names)
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(train_fraction * n))
    if n and train_fraction > 0:
        n_train = max(n_train, 1)
    train = sorted((names[i] for i in perm[:n_train]), key=_demo_key)
    valid = sorted((names[i] for i in perm[n_train:]), key=_demo_key)
    return {"train": train, "valid": valid}


def _bytes_array(names: Sequence[str]) -> np.ndarray:
    if not names:
        return np.zeros((0,), dtype="S1")
    return np.array([n.encode() for n in names])


def write_dataset(path: str | os.PathLike, episodes: Iterable[Episode], *, task: str,
                  env_args: Mapping[str, Any] | None, extra_attrs: Mapping[str, Any] | None = None,
                  train_fraction: float = 0.9, seed: int = 0, compression: str | None = None) -> Path:
    """Write episodes (any iterable, consumed once) to ``path`` atomically; returns the path.

    ``env_args`` is either the env kwargs dict or a full robomimic env_args dict (with ``env_kwargs``).
    ``extra_attrs`` go on ``/data`` (non-scalars JSON-encoded). Masks: a seeded random split with
    ``round(train_fraction * n)`` (at least 1) train demos. If anything raises, no file is left behind
    and an existing file at ``path`` is untouched.
    """
    path = Path(path)
    env_args_full = make_env_args(task, env_args)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["dexfly_format"] = FORMAT
            data = f.create_group("data")
            names: list[str] = []
            total = 0
            for i, ep in enumerate(episodes):
                if not isinstance(ep, Episode):
                    raise DatasetError(f"{path}: episode {i} is a {type(ep).__name__}, not an Episode")
                name = f"demo_{i}"
                _write_episode(data.create_group(name), ep, compression)
                names.append(name)
                total += ep.num_samples
            data.attrs["total"] = total
            data.attrs["env_args"] = json.dumps(env_args_full)
            data.attrs["task"] = task
            for k, v in (extra_attrs or {}).items():
                if k in ("total", "env_args", "task"):
                    raise DatasetError(f"extra_attrs may not override reserved attr {k!r}")
                data.attrs[k] = _json_attr(v)
            mask = f.create_group("mask")
            for k, v in _split_masks(names, train_fraction, seed).items():
                mask.create_dataset(k, data=_bytes_array(v))
    return path


def _write_episode(g: h5py.Group, ep: Episode, compression: str | None) -> None:
    kw = {"compression": compression} if compression else {}
    g.create_dataset("actions", data=ep.actions, **kw)
    g.create_dataset("states", data=ep.states, **kw)
    g.create_dataset("rewards", data=ep.rewards)
    g.create_dataset("dones", data=ep.dones)
    og = g.create_group("obs")
    for k, v in ep.obs.items():
        og.create_dataset(k, data=v, **kw)
    dg = g.create_group("datagen")
    for k in _DATAGEN_KEYS:
        dg.create_dataset(k, data=getattr(ep, k), **kw)
    g.attrs["num_samples"] = ep.num_samples
    g.attrs["success"] = bool(ep.success)
    g.attrs["object_ids"] = json.dumps(list(ep.object_ids))
    g.attrs["env_id"] = ep.env_id
    g.attrs["pose_id"] = ep.pose_id
    g.attrs["seed"] = ep.seed
    if ep.source is not None:
        g.attrs["source"] = ep.source
    if ep.extra:
        g.attrs["extra"] = json.dumps(dict(ep.extra))


def _attr_str(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v.item()
        return v.decode() if isinstance(v, bytes) else str(v)
    return str(v)


def _maybe_json(v: Any) -> Any:
    if isinstance(v, (bytes, np.bytes_)):
        v = v.decode()
    if isinstance(v, str):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_dataset(path: str | os.PathLike, *, task: str | None = None) -> Dataset:
    """Read and validate a dexfly dataset. Raises ``DatasetError`` (naming the file) on any problem."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {e}") from e
    try:
        with f:
            return _read(f, path, task)
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise DatasetError(f"{path}: corrupt or unreadable content ({type(e).__name__}: {e})") from e


def _read(f: h5py.File, path: Path, task: str | None) -> Dataset:
    def err(msg: str) -> DatasetError:
        return DatasetError(f"{path}: {msg}")

    if "dexfly_format" not in f.attrs:
        foreign = " (looks like a plain robomimic file)" if "data" in f and "env_args" in f["data"].attrs else ""
        raise err(f"not a dexfly dataset: missing root attr 'dexfly_format'{foreign}")
    fmt = _attr_str(f.attrs["dexfly_format"])
    if fmt != FORMAT:
        raise err(f"unsupported format {fmt!r}; this reader understands {FORMAT!r}")
    if "data" not in f or not isinstance(f["data"], h5py.Group):
        raise err("missing group 'data'")
    data = f["data"]
    for k in ("task", "env_args", "total"):
        if k not in data.attrs:
            raise err(f"missing attr data.{k}")
    file_task = _attr_str(data.attrs["task"])
    if task is not None and file_task != task:
        raise err(f"wrong task: file holds {file_task!r} demos but {task!r} was requested")
    try:
        env_args = json.loads(_attr_str(data.attrs["env_args"]))
    except json.JSONDecodeError as e:
        raise err(f"data.env_args is not valid JSON: {e}") from e
    if not isinstance(env_args, dict) or "env_kwargs" not in env_args:
        raise err("data.env_args must be a JSON object with 'env_kwargs'")
    extra_attrs = {k: _maybe_json(v) for k, v in data.attrs.items() if k not in ("task", "env_args", "total")}

    names = sorted(data.keys(), key=_demo_key)
    episodes = []
    widths: dict[str, tuple[str, tuple]] = {}
    for name in names:
        g = data[name]
        if not isinstance(g, h5py.Group):
            raise err(f"data/{name} is not a group")
        ep = _read_episode(g, name, err)
        for k, arr in (("actions", ep.actions), ("states", ep.states),
                       *((f"obs/{k}", v) for k, v in ep.obs.items())):
            if k in widths and widths[k][1] != arr.shape[1:]:
                raise err(f"data/{name}/{k} has per-step shape {arr.shape[1:]} but "
                          f"data/{widths[k][0]}/{k} has {widths[k][1]}")
            widths.setdefault(k, (name, arr.shape[1:]))
        episodes.append(ep)

    total = int(data.attrs["total"])
    actual = sum(e.num_samples for e in episodes)
    if total != actual:
        raise err(f"data.total = {total} but the demos hold {actual} samples")

    masks: dict[str, tuple[str, ...]] = {}
    if "mask" in f:
        for k, ds in f["mask"].items():
            vals = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in ds[()])
            unknown = [v for v in vals if v not in names]
            if unknown:
                raise err(f"mask/{k} names demos not in the file: {unknown[:5]}")
            masks[k] = vals
    else:
        raise err("missing group 'mask' (train/valid splits)")
    return Dataset(task=file_task, env_args=env_args, episodes=tuple(episodes), demo_names=tuple(names),
                   masks=MappingProxyType(masks), attrs=MappingProxyType(extra_attrs), path=path)


def _read_episode(g: h5py.Group, name: str, err) -> Episode:
    where = f"data/{name}"
    required = ["actions", "states", "rewards", "dones", "obs/obj", "obs/prop",
                *(f"datagen/{k}" for k in _DATAGEN_KEYS)]
    missing = [k for k in required if k not in g]
    if missing:
        raise err(f"{where} is missing datasets {missing}")
    for k in ("num_samples", "success", "object_ids", "env_id", "pose_id", "seed"):
        if k not in g.attrs:
            raise err(f"{where} is missing attr {k!r}")
    arr = {k: g[k][()] for k in required if not k.startswith("obs/")}
    obs = {k: v[()] for k, v in g["obs"].items()}
    T = arr["actions"].shape[0] if arr["actions"].ndim else 0
    n = int(g.attrs["num_samples"])
    if n != T:
        raise err(f"{where} num_samples mismatch: attr says {n} but actions has {T} steps")
    try:
        object_ids = json.loads(_attr_str(g.attrs["object_ids"]))
    except json.JSONDecodeError as e:
        raise err(f"{where} attr object_ids is not a JSON list: {e}") from e
    try:
        return Episode(
            actions=arr["actions"], states=arr["states"], rewards=arr["rewards"], dones=arr["dones"], obs=obs,
            ee_target_pose=arr["datagen/ee_target_pose"], hand_target=arr["datagen/hand_target"],
            object_poses=arr["datagen/object_poses"], subtask_end=arr["datagen/subtask_end"],
            success=bool(g.attrs["success"]), object_ids=tuple(object_ids), env_id=_attr_str(g.attrs["env_id"]),
            pose_id=_attr_str(g.attrs["pose_id"]), seed=int(g.attrs["seed"]),
            source=_attr_str(g.attrs["source"]) if "source" in g.attrs else None,
            extra=json.loads(_attr_str(g.attrs["extra"])) if "extra" in g.attrs else {},
        )
    except DatasetError as e:
        raise err(f"{where}: {str(e).removeprefix('invalid Episode: ')}") from None


def load_episodes(paths: Sequence[str | os.PathLike], *, task: str) -> list[Episode]:
    """Every episode of the dataset files, in order; DatasetError naming the file for a foreign, corrupt or
    other-task file, and when there are no episodes at all."""
    episodes: list[Episode] = []
    for p in paths:
        episodes += list(read_dataset(p, task=task).episodes)
    if not episodes:
        raise DatasetError(f"no episodes in {[str(p) for p in paths]}")
    return episodes


def episode_half_extents(episode: Episode) -> np.ndarray:
    """[n_objects, 3] float32 (m): each object's bounding-box half-sizes from the catalog, in the episode's object
    order (its roles')."""
    from dexfly.catalog import load_catalog

    catalog = load_catalog()
    return np.array([catalog.object(o).half_extents for o in episode.object_ids], np.float32)


def policy_training_episodes(episodes: Sequence[Episode], geometry: bool = False) -> list[dict[str, np.ndarray]]:
    """Episodes -> the policy trainers' input: [{"obs": obs_vector [T, obs_dim], "actions": [T, action_dim]}], with
    `geometry` also "half_extents" [n_objects, 3] (`episode_half_extents`)."""
    return [{"obs": obs_vector(e.obs), "actions": e.actions, **({"half_extents": episode_half_extents(e)} if geometry else {})}
            for e in episodes]


def merge_datasets(paths: Sequence[str | os.PathLike], out_path: str | os.PathLike, *,
                   task: str | None = None, train_fraction: float = 0.9, seed: int = 0,
                   extra_attrs: Mapping[str, Any] | None = None) -> Path:
    """Concatenate datasets of one task into ``out_path`` (demos renumbered, masks re-split).

    ``out_path`` may be one of the inputs (everything is read first, then written atomically).
    ``env_args`` and ``/data`` attrs come from the first input, plus ``merged_from`` (the input paths).
    """
    if not paths:
        raise DatasetError("merge_datasets: no input paths")
    sets = [read_dataset(p, task=task) for p in paths]
    t0 = sets[0].task
    for s in sets[1:]:
        if s.task != t0:
            raise DatasetError(f"{s.path}: task {s.task!r} differs from {sets[0].path}'s task {t0!r}")
    attrs = dict(sets[0].attrs)
    attrs.update(extra_attrs or {})
    attrs["merged_from"] = [str(p) for p in paths]
    episodes = [e for s in sets for e in s.episodes]
    return write_dataset(out_path, episodes, task=t0, env_args=sets[0].env_args, extra_attrs=attrs,
                         train_fraction=train_fraction, seed=seed)


def with_source(ep: Episode, source: str) -> Episode:
    """A copy of the episode tagged with another ``source``."""
    return replace(ep, source=source)
