"""Where does a policy leave its demonstrations? A closed-loop rollout beside the dataset demo of the same scene.

    rows = compare_with_demos("lift", policy, episodes, seed=0)

Each dataset episode's scene (objects, environment, exact initial poses: `TaskEnv.scene_from_episode`) is reset and
the policy (optionally with a residual hook) rolled out for the demo's length on the one unroll. Per step and arm it
records the commanded end-effector position and hand targets, and the main object's pose, and compares them with
the demo's actions and object poses:

- `target_offset_obj` [T, n_arms, 3] (m): policy target minus demo target, in the frame of the object's initial
  pose (x, y, z of the object: for Lift, y is the axis the two hands squeeze along, so a sign shows whether the
  policy's targets sit outside or inside the demo's);
- `hand_offset` [T, n_arms] (rad): mean over the hand's joints of policy minus demo hand target;
- `object_rise` and `demo_object_rise` [T] (m): the object's height above its start;
- `diverged_at`: the first step where the two object positions differ by more than `diverge_m`.

On the Lift base (BENCHMARKS.md, session 16) it shows the targets 5 to 16 mm outside the demo's squeeze (the hands
touch the box without pressing on it) and no rise commanded at all.

`open_loop_offsets` is the same comparison without the closed loop (teacher forcing): the policy's chunk sampled on
the demo's own observation history at chosen steps, minus the demo's actions. Small offsets there and large ones in
the rollout mean the network fits its data and the rollout drifts away from it (covariate shift); large offsets
there mean the fit itself is off.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import envs
from dexfly import dataset, geometry
from dexfly.layout import ACTION_DIM_PER_ARM, obs_vector, split_action
from dexfly.policies.diffusion.data import history_steps
from dexfly.unroll import ChunkPolicy, Hook, Step, jit_unroll
from dexfly.utils import topology_indices
from envs.base import EnvConfig, State

DIVERGE_M = 0.02
"""Object positions this far apart (m) count as diverged."""


@dataclass(frozen=True)
class DemoComparison:
    """One demo against the policy's rollout in its scene (arrays [T, ...], T = the demo's length)."""

    index: int  # the episode's index in the list given
    scene: str  # "object @ env / pose"
    success: bool  # the policy's rollout (last step)
    demo_success: bool
    object_rise: np.ndarray  # [T] m
    demo_object_rise: np.ndarray  # [T] m
    target_offset_obj: np.ndarray  # [T, n_arms, 3] m, object frame
    hand_offset: np.ndarray  # [T, n_arms] rad
    diverged_at: int | None

    def at(self, t: int) -> dict[str, Any]:
        """The comparison at step t, as plain numbers (for a table or JSON)."""
        return {"t": int(t), "rise": float(self.object_rise[t]), "demo_rise": float(self.demo_object_rise[t]),
                "target_offset_obj": np.round(self.target_offset_obj[t], 4).tolist(), "hand_offset": np.round(self.hand_offset[t], 4).tolist()}

    def summary(self) -> dict[str, Any]:
        return {"index": self.index, "scene": self.scene, "success": self.success, "demo_success": self.demo_success,
                "max_rise": float(self.object_rise.max()), "demo_max_rise": float(self.demo_object_rise.max()),
                "diverged_at": self.diverged_at, "steps": int(len(self.object_rise))}


def _record(adr: int, step: Step, action, after: State, extras):
    return action, after.data.qpos[:, adr:adr + 7], after.success


def compare_with_demos(task: str, policy: ChunkPolicy | None, episodes: Sequence, *, seed: int = 0, hook: Hook | None = None,
                       hook_params: Any = None, env_config: EnvConfig | None = None, diverge_m: float = DIVERGE_M) -> list[DemoComparison]:
    """Roll `policy` out in the scene of each episode (a `dataset.Episode` of `task`) and compare; one
    DemoComparison per episode, in order. Scenes of one object topology share one compiled rollout. With
    `policy=None` the `hook` alone acts (e.g. an open-loop replay of the demos' actions, as the tests do)."""
    if not episodes:
        raise ValueError("no demos to compare with")
    out: dict[int, DemoComparison] = {}
    probe = envs.make_cached(task, None, env_config)
    specs = [probe.scene_from_episode(ep) for ep in episodes]  # ValueError/CatalogError for a foreign episode
    for objects, idx in topology_indices(task, specs).items():
        env = envs.make_cached(task, tuple(objects), env_config)
        steps = max(len(episodes[i].actions) for i in idx)
        adr = int(env.obj_qpos_adr[0])
        scenes = env.make_scenes([specs[i] for i in idx])
        run = jit_unroll(env, steps, hook, functools.partial(_record, adr))
        final, (act, opose, success) = run(policy, scenes, jax.random.PRNGKey(seed), hook_params, None)
        env.check_finite(final.state, [specs[i] for i in idx], where="demo comparison")
        act, opose, success = np.asarray(act), np.asarray(opose), np.asarray(success)
        n_arms = env.action_dim // ACTION_DIM_PER_ARM
        for j, i in enumerate(idx):
            ep = episodes[i]
            T = len(ep.actions)
            pol, demo = split_action(act[:T, j], n_arms), split_action(np.asarray(ep.actions), n_arms)
            demo_obj = np.asarray(ep.object_poses)[:, 0]  # [T, 7]
            world_to_obj = np.asarray(geometry.quat_to_mat(jnp.asarray(demo_obj[0, 3:7]))).T
            offset = np.einsum("ij,tkj->tki", world_to_obj, pol.pos - demo.pos)
            far = np.linalg.norm(opose[:T, j, :3] - demo_obj[:, :3], axis=-1) > diverge_m
            out[i] = DemoComparison(
                index=i, scene=f"{'+'.join(ep.object_ids)} @ {ep.env_id} / {ep.pose_id}", success=bool(success[T - 1, j]),
                demo_success=bool(ep.success), object_rise=opose[:T, j, 2] - opose[0, j, 2], demo_object_rise=demo_obj[:, 2] - demo_obj[0, 2],
                target_offset_obj=offset, hand_offset=(pol.hand - demo.hand).mean(-1),
                diverged_at=int(np.argmax(far)) if far.any() else None)
    return [out[i] for i in range(len(episodes))]


def open_loop_offsets(policy, episode, steps: Sequence[int], *, draws: int = 8, seed: int = 0) -> np.ndarray:
    """Teacher forcing: for each step t in `steps`, `draws` chunks sampled by the diffusion `policy` on the demo's
    own observation history ending at t, minus the demo's actions t, t+1, ... (clipped at its end), world frame,
    raw action units: [len(steps), draws, pred_horizon, action_dim]. ValueError for a step outside the demo."""
    obs = obs_vector(episode.obs)
    actions = np.asarray(episode.actions)
    T, H = len(actions), policy.obs_horizon
    steps = np.asarray(list(steps), int)
    if steps.size == 0 or steps.min() < 0 or steps.max() >= T:
        raise ValueError(f"steps {steps.tolist()} must lie in the demo's 0..{T - 1}")
    hist = obs[np.asarray(history_steps(steps, H))]  # [S, H, D], oldest first, the first observation repeated
    hist = np.repeat(hist, draws, axis=0)
    step_arg = jnp.asarray(np.repeat(steps, draws)) if policy.uses_phase else None
    args = (jnp.asarray(hist, jnp.float32), jax.random.PRNGKey(seed), step_arg)
    if getattr(policy, "uses_geometry", False):
        half = dataset.episode_half_extents(episode)
        args += (jnp.broadcast_to(jnp.asarray(half), (len(hist), *half.shape)),)
    chunks = np.asarray(policy(*args))
    chunks = chunks.reshape(len(steps), draws, *chunks.shape[1:])
    demo = actions[np.minimum(steps[:, None] + np.arange(chunks.shape[2])[None, :], T - 1)]  # [S, Hp, A]
    return chunks - demo[:, None]


def plot_comparisons(path, rows: list[DemoComparison], task: str, dt: float) -> None:
    """Object rise (policy against demo) and the per-arm target offsets in the object frame over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dexfly.utils import atomic_path

    n_arms = rows[0].target_offset_obj.shape[1]
    fig, axes = plt.subplots(2 + n_arms, 1, figsize=(7.5, 2.4 * (2 + n_arms)), dpi=110, sharex=True)
    for k, r in enumerate(rows):
        t = np.arange(len(r.object_rise)) * dt
        c = f"C{k % 10}"
        axes[0].plot(t, r.object_rise, c, lw=1, label=f"{r.scene}")
        axes[0].plot(t, r.demo_object_rise, c, lw=1, ls="--")
        axes[1].plot(t, r.hand_offset.mean(-1), c, lw=1)
        for a in range(n_arms):
            for d, ls in zip(range(3), ("-", "--", ":")):
                axes[2 + a].plot(t, 1000 * r.target_offset_obj[:, a, d], c, lw=0.9, ls=ls)
    axes[0].set(ylabel="object rise (m)", title=f"{task}: policy (solid) against the demo of its scene (dashed)")
    axes[0].legend(fontsize=6)
    axes[1].set(ylabel="hand target\npolicy - demo (rad)")
    for a in range(n_arms):
        axes[2 + a].set(ylabel=f"arm {a}: target\npolicy - demo (mm)")
        axes[2 + a].axhline(0, color="k", lw=0.5)
    axes[2].text(0.01, 0.9, "object frame: x solid, y dashed, z dotted", transform=axes[2].transAxes, fontsize=7)
    axes[-1].set(xlabel="time (s)")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)


__all__ = ["DIVERGE_M", "DemoComparison", "compare_with_demos", "open_loop_offsets", "plot_comparisons"]

