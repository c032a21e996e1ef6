"""Closed-loop evaluation: clear errors, and a short real rollout of an untrained policy."""

from __future__ import annotations

import dexfly  # noqa: F401
import jax
import numpy as np
import pytest

import envs
from dexfly import evaluation
from dexfly.policies.diffusion import DiffusionConfig, DiffusionPolicy, Normalizer, init_train_state


@pytest.fixture(scope="module")
def grasp_env():
    return envs.make_cached("grasp")


def untrained_policy(obs_dim, action_dim):
    config = DiffusionConfig.tiny(num_inference_steps=2, num_train_timesteps=10)
    rng = np.random.default_rng(0)
    norm = Normalizer.fit(rng.normal(size=(32, obs_dim)).astype(np.float32), rng.normal(size=(32, action_dim)).astype(np.float32))
    return DiffusionPolicy.from_state(init_train_state(config, norm), config)


def test_zero_horizon_and_mismatch_errors(grasp_env):
    env = grasp_env
    policy = untrained_policy(sum(env.obs_dims.values()), env.action_dim)
    scenes = env.make_scenes([env.default_scene()])
    with pytest.raises(ValueError, match="horizon must be positive"):
        evaluation.rollout_policy(env, policy, scenes, jax.random.PRNGKey(0), num_steps=0)
    with pytest.raises(ValueError, match="trained for task 'pour'"):
        evaluation.evaluate(env, policy, [env.default_scene()], task="pour")
    wrong = untrained_policy(sum(env.obs_dims.values()) + 13, env.action_dim)  # a Pour-sized observation
    with pytest.raises(ValueError, match="obs_dim"):
        evaluation.evaluate(env, wrong, [env.default_scene()])
    with pytest.raises(ValueError, match="no evaluation scenes"):
        evaluation.evaluate(env, policy, [])


def test_short_rollout_runs(grasp_env):
    env = grasp_env
    policy = untrained_policy(sum(env.obs_dims.values()), env.action_dim)
    res = evaluation.evaluate(env, policy, [env.default_scene()] * 2, seeds=(0, 1), num_steps=16, record_qpos=True)
    assert res.per_scene.shape == (2, 2)
    assert res.qpos.shape == (16, 2, env.mj_model.nq)
    assert np.isfinite(res.qpos).all()
    assert 0.0 <= res.success_rate_mean <= 1.0


def test_padding_and_joint_sets_keep_each_scenes_rollout(grasp_env):
    """Padding the batch (to share a compiled rollout between evaluations of different sizes) and evaluating
    several sets in one batch leave each real scene's rollout as it was: same random draws, same physics up to
    float rounding of a different batch size."""
    env = grasp_env
    policy = untrained_policy(sum(env.obs_dims.values()), env.action_dim)
    specs = [env.default_scene()] * 2
    kw = dict(seeds=(0, 1), num_steps=16)
    plain = evaluation.evaluate(env, policy, specs, record_qpos=True, **kw)
    padded = evaluation.evaluate(env, policy, specs, record_qpos=True, pad_to=4, **kw)
    assert padded.qpos.shape == plain.qpos.shape and padded.per_scene.shape == plain.per_scene.shape
    np.testing.assert_allclose(padded.qpos, plain.qpos, atol=1e-4)
    assert np.abs(plain.qpos[:, 0] - plain.qpos[:, 1]).max() > 1e-4  # the two envs' draws differ, so a mix-up would show
    calls = []
    sets = evaluation.evaluate_sets("grasp", policy, {"a": specs[:1], "b": specs[1:]}, record_qpos_first=True,
                                    on_progress=lambda done, total: calls.append((done, total)), **kw)
    assert calls == [(0, 2), (1, 2), (2, 2)]  # one topology group x 2 seeds
    np.testing.assert_array_equal(sets["a"].groups[0][2].qpos, plain.qpos[:, :1])  # the same batch of 2: the same program
    np.testing.assert_array_equal(sets["b"].groups[0][2].per_scene, plain.per_scene[:, 1:])
    assert sets["a"].per_seed == tuple(float(x) for x in plain.per_scene[:, :1].mean(axis=1))
    with pytest.raises(ValueError, match=r"empty evaluation set\(s\): \['b'\]"):
        evaluation.evaluate_sets("grasp", policy, {"a": specs, "b": []}, **kw)
    with pytest.raises(ValueError, match="pad_to"):
        evaluation.evaluate(env, policy, specs, pad_to=0, **kw)


def _replay_hook(params, carry, step, key):
    """Open-loop replay of recorded actions, plus a per-env world-frame shift of the position targets."""
    actions, shift = params  # [T, B, A], [B, A]
    return carry, actions[step.t] + shift, None


def test_compare_with_demos_replay_and_shift():
    """The seed replayed in its own reconstructed scene has zero target offsets; shifting the targets by 1 cm in
    world x shows up as that shift, rotated into the object's frame; a length-mismatched or foreign episode fails."""
    from dexfly import dataset, geometry
    from dexfly.diagnose import compare_with_demos
    from dexfly.paths import DEMOS_DIR

    ep = dataset.read_dataset(DEMOS_DIR / "grasp_seed.hdf5", task="grasp").episodes[0]
    T, A = ep.actions.shape
    actions = np.broadcast_to(ep.actions[:, None], (T, 2, A)).astype(np.float32)
    shift = np.zeros((2, A), np.float32)
    shift[1, 0] = 0.01  # arm 0's x target, world frame
    rows = compare_with_demos("grasp", None, [ep, ep], hook=_replay_hook, hook_params=(actions, shift))
    same, moved = rows
    assert np.abs(same.target_offset_obj).max() < 1e-6 and np.abs(same.hand_offset).max() < 1e-6
    assert same.demo_success and same.success == ep.success
    # the replay follows the demo's object: the same scene was rebuilt
    assert np.abs(same.object_rise - same.demo_object_rise).max() < 0.01 and same.diverged_at is None
    rot = np.asarray(geometry.quat_to_mat(ep.object_poses[0, 0, 3:7]))
    np.testing.assert_allclose(moved.target_offset_obj[:, 0], np.broadcast_to(rot.T @ np.array([0.01, 0, 0]), (T, 3)), atol=1e-6)
    with pytest.raises(ValueError, match="no demos"):
        compare_with_demos("grasp", None, [])


def test_open_loop_offsets_align_history_and_demo():
    """Teacher forcing: the policy sees the demo's own observation history ending at each chosen step (oldest
    first, repeated at the start), and its chunk is compared with the demo's actions from that step on (the last
    action repeated past the end); a step outside the demo fails."""
    from dexfly import dataset
    from dexfly.diagnose import open_loop_offsets
    from dexfly.layout import obs_vector
    from dexfly.paths import DEMOS_DIR

    ep = dataset.read_dataset(DEMOS_DIR / "grasp_seed.hdf5", task="grasp").episodes[0]
    T, A = ep.actions.shape
    seen = []

    class Zeros:  # a stand-in diffusion policy: records its input, returns zero chunks of 4 actions
        obs_horizon, uses_phase = 2, False

        def __call__(self, hist, key, step=None):
            seen.append(np.asarray(hist))
            return np.zeros((hist.shape[0], 4, A), np.float32)

    steps = [0, 100, T - 2]
    off = open_loop_offsets(Zeros(), ep, steps, draws=3)
    assert off.shape == (3, 3, 4, A)
    obs = obs_vector({k: np.asarray(ep.obs[k]) for k in ("obj", "prop")})
    hist = seen[0].reshape(3, 3, 2, -1)
    np.testing.assert_array_equal(hist[0, :, 0], np.broadcast_to(obs[0], hist[0, :, 0].shape))  # repeated at the start
    np.testing.assert_array_equal(hist[1, 2, 0], obs[99])
    np.testing.assert_array_equal(hist[1, 2, 1], obs[100])
    np.testing.assert_allclose(off[1, 0], -ep.actions[100:104])
    np.testing.assert_allclose(off[2, 0], -ep.actions[[T - 2, T - 1, T - 1, T - 1]])
    with pytest.raises(ValueError, match="must lie in"):
        open_loop_offsets(Zeros(), ep, [T])


def test_per_object_and_per_environment_rates():
    """GroupedEval's per-object and per-environment rates average each scene's success over seeds, then over the
    scenes that share the key, across topology groups."""
    from envs.base import SceneSpec

    spec = lambda obj, env: SceneSpec((("object", obj),), env, "p00", (("object", (0.5, 0.0, 0.0)),))  # noqa: E731
    box = (spec("box_a", "studio"), spec("box_a", "kitchen"), spec("box_b", "studio"))
    can = (spec("can_a", "kitchen"),)
    hits_box = np.array([[1, 0, 1], [1, 0, 0]], bool)  # [n_seeds, n_scenes]
    hits_can = np.array([[1], [1]], bool)
    res = lambda hits: evaluation.EvalResult(0.0, 0.0, (0.0, 0.0), hits, None)  # noqa: E731  (only per_scene is read)
    grouped = evaluation.GroupedEval(0.5, 0.0, (0.75, 0.5), (((("object", "box"),), box, res(hits_box)), ((("object", "can"),), can, res(hits_can))))
    assert grouped.per_object() == {"box_a": 0.5, "box_b": 0.5, "can_a": 1.0}
    assert grouped.per_env() == {"studio": 0.75, "kitchen": 0.5}
    assert grouped.summary()["per_env"] == grouped.per_env()
