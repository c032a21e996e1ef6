"""Offscreen rendering of simulated trajectories (CPU MuJoCo ``mujoco.Renderer``) and video writing.

MJX batches vary model parameters per env (object sizes, colours, masses...). To render env ``i`` we copy
the base ``MjModel`` once, write env ``i``'s values into the copy (``model_overrides``: MjModel field name
-> array for that env, e.g. ``geom_size``, ``geom_rgba``, ``geom_pos``, ``body_mass``), set ``qpos`` and
call ``mj_forward`` per frame. ``dexfly`` sets ``MUJOCO_GL=egl`` where libEGL exists (and the user set
no backend); if the EGL context cannot be created we retry with OSMesa.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from dexfly.utils import atomic_path

import dexfly  # noqa: F401  (MUJOCO_GL before mujoco is imported)
import mujoco

__all__ = ["render_frames", "render_batch", "write_video", "apply_overrides", "tile_frames"]


def apply_overrides(model: mujoco.MjModel, overrides: Mapping[str, np.ndarray] | None) -> mujoco.MjModel:
    """Write ``overrides`` (MjModel field -> array of that field's shape) into ``model`` in place."""
    for name, value in (overrides or {}).items():
        target = getattr(model, name, None)
        if not isinstance(target, np.ndarray):
            raise ValueError(f"model override {name!r} is not an array field of MjModel")
        value = np.asarray(value)
        if value.shape != target.shape:
            if value.size == target.size:
                value = value.reshape(target.shape)
            else:
                raise ValueError(f"model override {name!r} has shape {value.shape}, model field has {target.shape}")
        target[...] = value
    return model


def _make_renderer(model: mujoco.MjModel, width: int, height: int) -> mujoco.Renderer:
    if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
        model.vis.global_.offwidth = max(width, model.vis.global_.offwidth)
        model.vis.global_.offheight = max(height, model.vis.global_.offheight)
    try:
        return mujoco.Renderer(model, height=height, width=width)
    except Exception as egl_error:  # noqa: BLE001  (EGL missing/broken: try OSMesa)
        if os.environ.get("MUJOCO_GL", "") == "osmesa":
            raise
        try:
            from mujoco.osmesa import GLContext as OSMesaContext
            from mujoco.rendering.classic import renderer as classic

            classic.gl_context.GLContext = OSMesaContext
            os.environ["MUJOCO_GL"] = "osmesa"
            return mujoco.Renderer(model, height=height, width=width)
        except Exception as osmesa_error:  # noqa: BLE001
            raise RuntimeError(
                f"cannot create an offscreen GL context: EGL failed ({egl_error!r}), "
                f"OSMesa failed ({osmesa_error!r}). Set MUJOCO_GL=egl or osmesa (before importing dexfly) "
                "to a backend available on this machine."
            ) from osmesa_error


def _camera_arg(model: mujoco.MjModel, camera: str | int | None) -> int | str | mujoco.MjvCamera:
    if camera is not None:
        if isinstance(camera, str) and mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
            names = [model.camera(i).name for i in range(model.ncam)]
            raise ValueError(f"unknown camera {camera!r}; model cameras: {names}")
        return camera
    if model.ncam > 0:
        return 0
    cam = mujoco.MjvCamera()
    mujoco.mjv_defaultFreeCamera(model, cam)
    return cam


def _render_into(renderer: mujoco.Renderer, model: mujoco.MjModel, data: mujoco.MjData, qpos: np.ndarray,
                 cam, out: np.ndarray) -> None:
    for t in range(qpos.shape[0]):
        data.qpos[:] = qpos[t]
        mujoco.mj_forward(model, data)
        renderer.update_scene(data, camera=cam)
        out[t] = renderer.render()


def render_frames(mj_model: mujoco.MjModel, qpos: np.ndarray, *, camera: str | int | None = None,
                  width: int = 480, height: int = 360,
                  model_overrides: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Render one env's trajectory: ``qpos`` [T, nq] -> uint8 frames [T, height, width, 3].

    ``camera``: a camera name or id of the model, or None for the model's first camera
    (the default free camera when the model has none). The input model is not modified.
    """
    qpos = np.asarray(qpos, dtype=np.float64)
    if qpos.ndim == 1:
        qpos = qpos[None]
    if qpos.ndim != 2 or qpos.shape[1] != mj_model.nq:
        raise ValueError(f"qpos must be [T, nq={mj_model.nq}], got shape {qpos.shape}")
    model = apply_overrides(copy.deepcopy(mj_model), model_overrides)
    data = mujoco.MjData(model)
    out = np.zeros((qpos.shape[0], height, width, 3), np.uint8)
    renderer = _make_renderer(model, width, height)
    try:
        _render_into(renderer, model, data, qpos, _camera_arg(model, camera), out)
    finally:
        renderer.close()
    return out


def tile_frames(frames: np.ndarray, ncols: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """[T, B, H, W, 3] -> [T, rows*(H+pad)-pad, ncols*(W+pad)-pad, 3] grid (row-major over B)."""
    T, B, H, W, C = frames.shape
    ncols = ncols or int(math.ceil(math.sqrt(B)))
    nrows = int(math.ceil(B / ncols))
    out = np.full((T, nrows * (H + pad) - pad, ncols * (W + pad) - pad, C), pad_value, np.uint8)
    for b in range(B):
        r, c = divmod(b, ncols)
        out[:, r * (H + pad): r * (H + pad) + H, c * (W + pad): c * (W + pad) + W] = frames[:, b]
    return out


def render_batch(mj_model: mujoco.MjModel, qpos: np.ndarray, env_indices: Sequence[int] | None = None, *,
                 overrides_per_env: Mapping[str, np.ndarray] | None = None, camera: str | int | None = None,
                 width: int = 480, height: int = 360, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Render several envs of a batch and tile them in a grid.

    ``qpos`` [T, B, nq]; ``env_indices`` picks envs (default all B); ``overrides_per_env`` maps an MjModel
    field to a batched array [B, ...] (env i gets ``value[i]``). Returns uint8 [T, H_grid, W_grid, 3].
    """
    qpos = np.asarray(qpos, dtype=np.float64)
    if qpos.ndim != 3 or qpos.shape[2] != mj_model.nq:
        raise ValueError(f"qpos must be [T, B, nq={mj_model.nq}], got shape {qpos.shape}")
    T, B, _ = qpos.shape
    idx = list(range(B)) if env_indices is None else [int(i) for i in env_indices]
    for i in idx:
        if not 0 <= i < B:
            raise ValueError(f"env index {i} out of range for a batch of {B}")
    overrides_per_env = dict(overrides_per_env or {})
    for k, v in overrides_per_env.items():
        if np.shape(v)[0] != B:
            raise ValueError(f"overrides_per_env[{k!r}] has leading dim {np.shape(v)[0]}, expected batch size {B}")
    model = copy.deepcopy(mj_model)
    data = mujoco.MjData(model)
    frames = np.zeros((T, len(idx), height, width, 3), np.uint8)
    renderer = _make_renderer(model, width, height)
    try:
        cam = _camera_arg(model, camera)
        for j, i in enumerate(idx):
            apply_overrides(model, {k: np.asarray(v)[i] for k, v in overrides_per_env.items()})
            _render_into(renderer, model, data, qpos[:, i], cam, frames[:, j])
    finally:
        renderer.close()
    return tile_frames(frames, ncols=ncols, pad=pad)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 30.0) -> Path:
    """Write uint8 frames [T, H, W, 3] to ``.mp4`` (H.264 via imageio-ffmpeg) or ``.gif``, atomically."""
    import imageio.v2 as iio

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4) or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty [T, H, W, 3] array, got shape {frames.shape}")
    frames = frames[..., :3].astype(np.uint8, copy=False)
    ext = path.suffix.lower()
    if ext not in (".mp4", ".gif"):
        raise ValueError(f"unsupported video extension {ext!r} (use .mp4 or .gif)")
    with atomic_path(path, suffix=ext) as tmp:
        if ext == ".mp4":
            # yuv420p needs even sizes: pad by edge replication
            H, W = frames.shape[1:3]
            if H % 2 or W % 2:
                frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
            # imageio-ffmpeg starts the ffmpeg binary with subprocess (fork, then exec at once): the child runs
            # no Python or XLA code, so JAX's at-fork warning ("will likely lead to a deadlock") does not apply.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
                with iio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=7,
                                    pixelformat="yuv420p", macro_block_size=1) as w:
                    for fr in frames:
                        w.append_data(fr)
        else:
            iio.mimsave(tmp, list(frames), format="GIF", duration=1000.0 / fps, loop=0)
    return path
