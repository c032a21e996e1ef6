"""A trained policy folder as pure JAX functions of arrays (what `dexfly.export` serialises).

    loaded = load_policy_folder("runs/dp_grasp")       # or a train_residual.py folder
    chunk = loaded.function("base_policy").fn(obs_history, noise)

- `base_policy(obs_history [B, obs_horizon, obs_dim] raw, noise [B, pred_horizon, action_dim][, step [B]]
  [, object_half_extents [B, n, 3]]) -> action_chunk [B, action_horizon, action_dim] raw` (step for a policy that
  sees the episode's phase, half-extents for one that sees object geometry): the diffusion policy's DDIM sampler (EMA weights, the
  checkpoint's DDIM steps, normaliser included) with its one random draw, the initial noise, as an input.
  DDIM here has eta = 0, so the chunk is a deterministic function of (history, noise), identical to
  `DiffusionPolicy.sample(history, key)[:, :action_horizon]` when noise = `jax.random.normal(key, ...)`.
- `residual_step(obs [B, obs_dim] raw, base_action [B, action_dim], [object_half_extents [B, n_objects, 3]]) ->
  action [B, action_dim]`: one step of the combined policy as evaluation runs it (the residual hook with
  `deterministic=True`, active): the residual's features, its running-statistics normaliser, the Gaussian's mean,
  tanh, then `combine`. The half-extents input exists only when the residual was trained with obs_geometry.
- For a residual trained with `hold_steps` > 1 (a correction decided every hold_steps steps and held between),
  also `residual_correction(obs, base_action, [object_half_extents]) -> correction [B, n_arms * 12]` (the decision,
  in [-1, 1]) and `residual_combine(base_action, correction) -> action`: decide at steps 0, hold_steps, 2 hold_steps,
  ... of the episode, combine every step. `residual_step` equals the two at a decision step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from dexfly import layout
from dexfly.policies.diffusion.checkpoint import RUN_FILE as BASE_RUN_FILE
from dexfly.policies.diffusion.checkpoint import latest_step, load_run, resolve_run
from dexfly.policies.diffusion.config import DiffusionConfig
from dexfly.policies.diffusion.policy import DiffusionPolicy
from dexfly.policies.residual import checkpoint as residual_ckpt
from dexfly.policies.residual.config import ResidualConfig
from dexfly.policies.residual.networks import ResidualSpec, combine, features, make_networks, squash

BATCH = "batch"  # name of the symbolic batch dimension (StableHLO symbol and ONNX dim_param)


class ExportError(ValueError):
    """A folder is not an exportable policy, or its checkpoint cannot be read; the message names the folder."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: shape with BATCH for the symbolic batch dimension; float32 throughout."""

    name: str
    shape: tuple[int | str, ...]
    doc: str
    dtype: str = "float32"

    def struct(self, batch: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(tuple(batch if d == BATCH else d for d in self.shape), jnp.dtype(self.dtype))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "doc": self.doc}


@dataclass(frozen=True)
class PolicyFunction:
    """A pure function of arrays: fn(*inputs) -> the one output, with its signature."""

    name: str
    fn: Callable[..., jax.Array]
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec
    doc: str

    def in_specs(self, batch: Any = None) -> list[jax.ShapeDtypeStruct]:
        """Input shapes; `batch` None: the symbolic batch dimension BATCH."""
        if batch is None:
            (batch,) = jax.export.symbolic_shape(BATCH)
        return [s.struct(batch) for s in self.inputs]


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy folder's functions and its description (JSON-serialisable, for the export manifest)."""

    kind: Literal["base", "residual"]
    task: str
    folder: Path
    functions: tuple[PolicyFunction, ...]
    description: dict[str, Any]

    def function(self, name: str) -> PolicyFunction:
        for f in self.functions:
            if f.name == name:
                return f
        raise KeyError(f"{self.folder}: no function {name!r}; has {[f.name for f in self.functions]}")


# ---------------------------------------------------------------- the functions

def base_policy_function(policy: DiffusionPolicy) -> PolicyFunction:
    """The base policy as (obs_history, noise[, step]) -> action chunk, through `DiffusionPolicy.sample_from_noise`
    (`step` only for a policy that conditions on the episode's phase)."""
    cfg = policy.config
    H, P, Ha, D, A = cfg.obs_horizon, cfg.pred_horizon, cfg.action_horizon, policy.obs_dim, policy.action_dim
    inputs = (TensorSpec("obs_history", (BATCH, H, D), "raw observation history, oldest first; each row is obs_vector "
                         "(concat of the dataset's obs/obj and obs/prop); at an episode's start the first observation repeated"),
              TensorSpec("noise", (BATCH, P, A), "initial DDIM noise, independent standard normal draws"))
    if policy.uses_phase:
        inputs += (TensorSpec("step", (BATCH,), f"control steps since the episode's reset at the newest observation (a whole "
                              f"number); the policy sees the phase min(step / {cfg.phase_steps}, 1)"),)
    if policy.uses_geometry:
        inputs += (TensorSpec("object_half_extents", (BATCH, cfg.obs_geometry, 3), "the scene's first "
                              f"{cfg.obs_geometry} object(s)' bounding-box half-extents (m), in role order"),)

    def base_policy(obs_history: jax.Array, noise: jax.Array, *extra: jax.Array) -> jax.Array:
        step = extra[0].astype(jnp.int32) if policy.uses_phase else None
        half_extents = extra[-1] if policy.uses_geometry else None
        return policy.sample_from_noise(obs_history, noise, step, half_extents)[:, :Ha]

    return PolicyFunction(
        "base_policy", base_policy, inputs,
        TensorSpec("action_chunk", (BATCH, Ha, A), "raw actions to execute in order; [:, 0] is the action for the newest observation"),
        f"diffusion policy: {cfg.num_inference_steps} DDIM steps (eta = 0) from the given noise, EMA weights, normaliser included",
    )


def residual_step_function(spec: ResidualSpec, config: ResidualConfig, policy_params: Any, normalizer: Any) -> PolicyFunction:
    """The combined policy's per-step function: what `residual_hook(..., deterministic=True)` computes in an active env."""
    correction = residual_correction_function(spec, config, policy_params, normalizer)

    def residual_step(obs, base_action, *half_extents):
        return combine(spec, config, base_action, correction.fn(obs, base_action, *half_extents))

    return PolicyFunction(
        "residual_step", residual_step, correction.inputs,
        TensorSpec("action", (BATCH, spec.action_dim), "combined action: the base action corrected by the residual's mean"),
        "residual policy, deterministic (Gaussian mean), tanh-squashed and combined with the base action",
    )


def residual_correction_function(spec: ResidualSpec, config: ResidualConfig, policy_params: Any, normalizer: Any) -> PolicyFunction:
    """The residual's decision: its features, normaliser and Gaussian mean, tanh-squashed (what the deterministic hook
    applies, and holds for `hold_steps` steps)."""
    network = make_networks(spec, config)
    dist = network.parametric_action_distribution
    inputs = [TensorSpec("obs", (BATCH, spec.obs_layout.dim), "raw observation of this step (obs_vector: concat of obs/obj and obs/prop)"),
              TensorSpec("base_action", (BATCH, spec.action_dim), "the base policy's action for this step (a row of its action chunk)")]
    if config.obs_geometry:
        inputs.append(TensorSpec("object_half_extents", (BATCH, spec.n_objects, 3), "each object's bounding-box half-extents (m)"))

    def residual_correction(obs, base_action, *half_extents):
        # features() reads the half-extents only when obs_geometry is on
        x = features(spec, config, obs, base_action, half_extents[0] if half_extents else None)
        return squash(dist.mode(network.policy_network.apply(normalizer, policy_params, x)))  # the Gaussian's mean

    return PolicyFunction(
        "residual_correction", residual_correction, tuple(inputs),
        TensorSpec("correction", (BATCH, spec.residual_dim), "the residual's correction in [-1, 1] (per arm: position 3, rotation 3, hand 6)"),
        "residual policy's decision, deterministic (Gaussian mean), tanh-squashed",
    )


def residual_combine_function(spec: ResidualSpec, config: ResidualConfig) -> PolicyFunction:
    """`combine`: a base action corrected by a (held) residual correction."""
    return PolicyFunction(
        "residual_combine", lambda base_action, correction: combine(spec, config, base_action, correction),
        (TensorSpec("base_action", (BATCH, spec.action_dim), "the base policy's action for this step (a row of its action chunk)"),
         TensorSpec("correction", (BATCH, spec.residual_dim), "the held output of residual_correction")),
        TensorSpec("action", (BATCH, spec.action_dim), "combined action"),
        "the base action corrected by the residual's correction (rotation re-orthonormalised, hand clipped)",
    )


# ---------------------------------------------------------------- descriptions

def _names(task: str, n_objects: int, n_arms: int) -> tuple[list[str], list[str]]:
    """Object role and arm names of the task (generic ones when the task's env does not match the dimensions)."""
    try:
        import envs

        cls = envs._registry()[task]
        roles, arms = list(cls.roles), [a.rstrip("_") or "arm" for a in cls.arms]
        if len(roles) == n_objects and len(arms) == n_arms:
            return roles, arms
    except (ImportError, KeyError):
        pass
    return [f"object{i}" for i in range(n_objects)], [f"arm{i}" for i in range(n_arms)]


def describe_layouts(task: str, obs_dim: int, action_dim: int) -> dict[str, Any]:
    """The observation and action layouts (dexfly.layout) as named blocks of the flat vectors."""
    n_arms, r = divmod(int(action_dim), layout.ACTION_DIM_PER_ARM)
    n_objects, r2 = divmod(int(obs_dim) - layout.ARM_STRIDE * n_arms, layout.OBJ_STRIDE)
    if r or r2 or n_arms < 1 or n_objects < 0:
        raise ExportError(f"obs_dim {obs_dim} / action_dim {action_dim} are not a dexfly layout "
                          f"({layout.OBJ_STRIDE} per object + {layout.ARM_STRIDE} per arm / {layout.ACTION_DIM_PER_ARM} per arm)")
    lay = layout.ObsLayout(n_objects, n_arms)
    roles, arms = _names(task, n_objects, n_arms)
    obs_blocks = []
    for role, start in zip(roles, lay.object_starts):
        obs_blocks += [{"name": f"{role}.pos", "start": start + layout.OBJ_POS, "size": 3, "unit": "m, world frame"},
                       {"name": f"{role}.quat", "start": start + layout.OBJ_QUAT, "size": 4, "unit": "unit quaternion w, x, y, z"},
                       {"name": f"{role}.vel", "start": start + layout.OBJ_VEL, "size": 6, "unit": "linear m/s, angular rad/s"}]
    for arm, start in zip(arms, lay.arm_starts):
        obs_blocks += [{"name": f"{arm}.joint_qpos", "start": start + layout.ARM_QPOS, "size": 7, "unit": "rad"},
                       {"name": f"{arm}.joint_qvel", "start": start + layout.ARM_QVEL, "size": 7, "unit": "rad/s"},
                       {"name": f"{arm}.hand_qpos", "start": start + layout.ARM_HAND, "size": 6, "unit": "rad"},
                       {"name": f"{arm}.ee_pos", "start": start + layout.ARM_EE_POS, "size": 3, "unit": "m, world frame"},
                       {"name": f"{arm}.ee_quat", "start": start + layout.ARM_EE_QUAT, "size": 4, "unit": "unit quaternion w, x, y, z"}]
    act_blocks = []
    for i, arm in enumerate(arms):
        s = i * layout.ACTION_DIM_PER_ARM
        act_blocks += [{"name": f"{arm}.ee_target_pos", "start": s + layout.ACTION_POS.start, "size": 3, "unit": "m, world frame"},
                       {"name": f"{arm}.ee_target_rot6d", "start": s + layout.ACTION_ROT6D.start, "size": 6,
                        "unit": "first two rotation-matrix columns, world frame"},
                       {"name": f"{arm}.hand_targets", "start": s + layout.ACTION_HAND.start, "size": 6,
                        "unit": "rad, " + ", ".join(layout.HAND_ACTUATORS)}]
    return {
        "observation": {"dim": int(obs_dim), "n_objects": n_objects, "object_roles": roles, "n_arms": n_arms, "arms": arms,
                        "vector": "concat(obs/obj, obs/prop) of one step (dexfly.layout.obs_vector)", "blocks": obs_blocks},
        "action": {"dim": int(action_dim), "per_arm": layout.ACTION_DIM_PER_ARM, "blocks": act_blocks},
    }


def _floats(x) -> list:
    return np.asarray(x, np.float64).tolist()


def _base_description(policy: DiffusionPolicy, config: DiffusionConfig) -> dict[str, Any]:
    n = policy.normalizer
    minmax = lambda m: {"lo": _floats(m.lo), "hi": _floats(m.hi), "scale": _floats(m.scale), "offset": _floats(m.offset)}  # noqa: E731
    return {
        "horizons": {"obs_horizon": config.obs_horizon, "pred_horizon": config.pred_horizon, "action_horizon": config.action_horizon},
        "diffusion": {"ddim_steps": config.num_inference_steps, "num_train_timesteps": config.num_train_timesteps,
                      "eta": 0.0, "clip_sample": config.clip_sample, "weights": "ema", "config": config.to_dict()},
        "observation_features": {"quat_at": list(config.obs_quat_at), "rel_pos": [list(p) for p in config.obs_rel_pos],
                                 "phase_steps": config.phase_steps, "geometry_objects": config.obs_geometry,
                                 "dim": policy.obs_dim + config.obs_extra_dims,
                                 "doc": "the network sees dexfly.layout.obs_features(obs, quat_at, rel_pos): quaternions as rot6d, "
                                        "plus position differences, then (phase_steps > 0) the episode's phase min(step / phase_steps, 1) "
                                        "of each history row, then (geometry_objects > 0) the first objects' half-extents on every row; the observation "
                                        "normaliser works on these features"},
        "normalizer": {"doc": "min-max to [-1, 1]: y = x * scale + offset; actions are un-normalised as (y - offset) / scale",
                       "obs": minmax(n.obs), "action": minmax(n.action)},
    }


def _checkpoint_source(ckpt_dir: Path) -> dict[str, Any]:
    step = latest_step(ckpt_dir)
    if step is None:
        raise ExportError(f"{ckpt_dir}: no checkpoint")
    return {"checkpoint": str(ckpt_dir / str(step)), "step": int(step), "sha256": residual_ckpt.tree_sha256(ckpt_dir / str(step))}


def _load_base(folder: Path) -> LoadedPolicy:
    try:
        ckpt_dir, meta = resolve_run(folder)
        policy, config, meta = load_run(folder)
        source = {"path": str(Path(ckpt_dir).parent), **_checkpoint_source(Path(ckpt_dir))}
    except ExportError:
        raise
    except Exception as e:  # orbax raises many types for a damaged checkpoint; name the folder whatever it is
        raise ExportError(f"{folder}: cannot load the diffusion policy ({type(e).__name__}: {e})") from e
    task = str(meta["task"])
    description = {"kind": "base", "task": task, "source": source, **describe_layouts(task, policy.obs_dim, policy.action_dim),
                   **_base_description(policy, config)}
    return LoadedPolicy("base", task, Path(source["path"]), (base_policy_function(policy),), description)


def _load_residual(folder: Path) -> LoadedPolicy:
    try:
        base, _, params, saved = residual_ckpt.load_combined(folder)
        base_run = Path(saved["base"]["path"])
        base_ckpt, _ = resolve_run(base_run)
        base_source = {"path": str(base_run), **_checkpoint_source(Path(base_ckpt))}
        source = {"path": str(folder.resolve()), **_checkpoint_source(folder.resolve() / "checkpoints")}
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"{folder}: cannot load the residual policy ({type(e).__name__}: {e})") from e
    task = str(saved["task"])
    config, spec = ResidualConfig.from_dict(saved["config"]), ResidualSpec.from_dict(saved["spec"])
    if spec.obs_layout.dim != base.obs_dim or spec.action_dim != base.action_dim:
        raise ExportError(f"{folder}: residual layout (obs {spec.obs_layout.dim}, action {spec.action_dim}) differs from its base's "
                          f"(obs {base.obs_dim}, action {base.action_dim})")
    description = {
        "kind": "residual", "task": task, "source": source, "base_source": base_source,
        **describe_layouts(task, base.obs_dim, base.action_dim), **_base_description(base, base.config),
        "residual": {
            "config": config.to_dict(), "spec": spec.to_dict(),
            "combine": {"alpha_pos": config.alpha_pos, "alpha_rot": config.alpha_rot, "alpha_hand": config.alpha_hand,
                        "doc": "per arm: pos + alpha_pos * d[0:3]; rotation exp(alpha_rot * d[3:6]) applied to the base's; "
                               "hand + alpha_hand * (high - low) * d[6:12], clipped; d = tanh(Gaussian mean)"},
            "feature_dim": spec.feature_dim(config),
            "normalizer": {"doc": "running statistics: (features - mean) / std", "mean": _floats(params.normalizer.mean),
                           "std": _floats(params.normalizer.std)},
            "usage": ("every env step: action = residual_step(obs, action_chunk[:, k]) for the k-th action of the base's current chunk"
                      if config.hold_steps == 1 else
                      f"at env steps 0, {config.hold_steps}, {2 * config.hold_steps}, ... of the episode: correction = residual_correction(obs, "
                      "action_chunk[:, k]); every env step: action = residual_combine(action_chunk[:, k], correction), for the k-th action of "
                      "the base's current chunk"),
        },
    }
    functions = (base_policy_function(base), residual_step_function(spec, config, params.policy, params.normalizer))
    if config.hold_steps > 1:
        functions += (residual_correction_function(spec, config, params.policy, params.normalizer), residual_combine_function(spec, config))
    return LoadedPolicy("residual", task, folder.resolve(), functions, description)


def load_policy_folder(path: str | Path) -> LoadedPolicy:
    """A train_diffusion.py folder (or its checkpoints/) -> the base policy; a train_residual.py folder -> the base
    and the combined per-step function. ExportError naming the folder for anything else."""
    folder = Path(path)
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such folder")
    if (folder / residual_ckpt.RUN_FILE).is_file():
        return _load_residual(folder)
    if (folder / BASE_RUN_FILE).is_file() or (folder.parent / BASE_RUN_FILE).is_file():
        return _load_base(folder)
    raise ExportError(f"{folder}: not a dexfly policy folder (neither {BASE_RUN_FILE} of experiments/train_diffusion.py "
                      f"nor {residual_ckpt.RUN_FILE} of experiments/train_residual.py)")


__all__ = ["BATCH", "ExportError", "LoadedPolicy", "PolicyFunction", "TensorSpec", "base_policy_function", "describe_layouts",
           "load_policy_folder", "residual_combine_function", "residual_correction_function", "residual_step_function"]
