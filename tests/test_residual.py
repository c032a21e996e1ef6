"""Residual PPO: the exploration schedule, the zero-initialised residual, bit-exact base actions at alpha = 0 or
epsilon = 0, exact resume, refusal of a foreign base, and a short toy run that must improve its return."""

from __future__ import annotations

import functools
import json

import dexfly  # noqa: F401
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import envs
from dexfly import layout
from dexfly.policies.diffusion import DiffusionConfig, DiffusionPolicy, Normalizer, init_train_state, save_checkpoint
from dexfly.policies.residual import ResidualConfig, ResidualSpec, combine
from dexfly.policies.residual import checkpoint as ckpt
from dexfly.policies.residual import train as rt
from dexfly.unroll import unroll
from envs.base import EnvConfig

SHORT = EnvConfig(episode_seconds=0.2)  # 10 control steps


@struct.dataclass
class HomePolicy:
    """A chunk policy that always commands the given action (the toy base: hold the home pose)."""

    action: jax.Array
    obs_dim: int = struct.field(pytree_node=False)
    obs_horizon: int = struct.field(pytree_node=False, default=1)
    action_horizon: int = struct.field(pytree_node=False, default=5)

    @property
    def action_dim(self) -> int:
        return int(self.action.shape[-1])

    def sample(self, obs_history, key, step=None, half_extents=None):
        return jnp.broadcast_to(self.action, (obs_history.shape[0], self.action_horizon, self.action.shape[-1]))


@pytest.fixture(scope="module")
def grasp_short():
    return envs.make_cached("grasp", None, SHORT)


def _tiny_base(env):
    config = DiffusionConfig.tiny(num_inference_steps=2, num_train_timesteps=10, action_horizon=4)
    rng = np.random.default_rng(0)
    obs_dim = sum(env.obs_dims.values())
    norm = Normalizer.fit(rng.normal(size=(32, obs_dim)).astype(np.float32), rng.normal(size=(32, env.action_dim)).astype(np.float32))
    return DiffusionPolicy.from_state(init_train_state(config, norm), config), config, norm


def test_epsilon_schedule():
    cfg = ResidualConfig(explore_steps=1000)
    got = [float(rt.epsilon(cfg, s)) for s in (0, 250, 500, 1000, 5000)]
    assert got == [0.0, 0.25, 0.5, 1.0, 1.0]


def test_zero_initialised_residual_is_the_base(grasp_short):
    """The untrained policy's mean correction is exactly 0; combining it leaves position and hand exact and the
    rotation equal up to re-orthonormalisation; alpha = 0 returns the base action object itself."""
    env = grasp_short
    spec, cfg = ResidualSpec.of_env(env), ResidualConfig(hidden=(32, 32), value_hidden=(32,))
    state = rt.init_state(cfg, spec)
    net = rt.make_networks(spec, cfg)
    obs = jax.random.normal(jax.random.PRNGKey(0), (5, spec.feature_dim(cfg)))
    mean = net.parametric_action_distribution.mode(net.policy_network.apply(state.normalizer, state.params.policy, obs))
    assert np.all(np.asarray(mean) == 0.0)
    base = jnp.asarray(np.tile(env.home_action(), (5, 1)))
    out = combine(spec, cfg, base, jnp.tanh(mean))
    b, o = layout.split_action(np.asarray(base), 1), layout.split_action(np.asarray(out), 1)
    np.testing.assert_array_equal(o.pos, b.pos)
    np.testing.assert_allclose(o.rot6d, b.rot6d, atol=1e-6)
    np.testing.assert_array_equal(o.hand, np.clip(b.hand, env.hand_ctrl_low[0], env.hand_ctrl_high[0]))
    assert combine(spec, cfg.replace(alpha_pos=0.0, alpha_rot=0.0, alpha_hand=0.0), base, jnp.ones((5, 12))) is base


def test_combined_action_is_valid(grasp_short):
    env = grasp_short
    spec, cfg = ResidualSpec.of_env(env), ResidualConfig(alpha_rot=1.0, alpha_hand=1.0)
    base = jnp.asarray(np.tile(env.home_action(), (3, 1)))
    out = layout.split_action(np.asarray(combine(spec, cfg, base, jnp.asarray([[1.0] * 12, [-1.0] * 12, [0.3] * 12]))), 1)
    from dexfly.geometry import mat_from_rot6d

    rot = np.asarray(mat_from_rot6d(jnp.asarray(out.rot6d)))
    np.testing.assert_allclose(rot @ np.swapaxes(rot, -1, -2), np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)
    np.testing.assert_allclose(out.rot6d, rot[..., :, :2].swapaxes(-1, -2).reshape(*rot.shape[:-2], 6), atol=1e-6)
    assert np.all(out.hand >= env.hand_ctrl_low[0] - 1e-7) and np.all(out.hand <= env.hand_ctrl_high[0] + 1e-7)


def _record_action(step, action, after, extras):
    return action


def test_alpha_zero_or_epsilon_zero_reproduce_the_base_bit_for_bit(grasp_short):
    """Three unrolls of the same diffusion base in one jit: without a hook; with the residual hook active in envs 2
    and 3 only (envs 0 and 1 drew "base alone", as with epsilon = 0); with alpha = 0 in every env. Every action the
    base alone executes is identical to the bit, and the applied residual does change the others."""
    env = grasp_short
    base, _, _ = _tiny_base(env)
    spec = ResidualSpec.of_env(env)
    cfg = ResidualConfig(hidden=(32, 32), value_hidden=(32,), init_noise_std=1.0)
    zero = cfg.replace(alpha_pos=0.0, alpha_rot=0.0, alpha_hand=0.0)
    state = rt.init_state(cfg, spec)
    policy = jax.tree.map(lambda x: x + 0.3, state.params.policy)  # far from zero, so an applied correction shows
    scenes = env.make_scenes(env.sample_scenes(jax.random.PRNGKey(3), 4, envs.SceneSet(sample_poses=True)))

    @jax.jit
    def run(key):
        start = env.batched(env.reset)(scenes, jax.random.split(key, 4))
        go = functools.partial(unroll, env, base, start, key, num_steps=env.episode_steps, record=_record_action)
        plain = go()[1]
        mixed = go(hook=functools.partial(rt.residual_hook, spec, cfg, False),
                   hook_params=rt.HookParams(policy, state.normalizer, jnp.asarray([False, False, True, True])))[1]
        alpha0 = go(hook=functools.partial(rt.residual_hook, spec, zero, False), hook_params=rt.HookParams(policy, state.normalizer, True))[1]
        return plain, mixed, alpha0

    plain, mixed, alpha0 = (np.asarray(a) for a in run(jax.random.PRNGKey(0)))
    assert plain.shape == (env.episode_steps, 4, env.action_dim)
    np.testing.assert_array_equal(mixed[:, :2], plain[:, :2])
    np.testing.assert_array_equal(alpha0, plain)
    assert np.abs(mixed[:, 2:] - plain[:, 2:]).max() > 1e-3


def test_base_of_another_task_is_refused(tmp_path):
    from dexfly.policies.residual.fit import fit

    pour = envs.make_cached("pour")
    _, config, norm = _tiny_base(pour)
    run = tmp_path / "pour_base"
    save_checkpoint(run / "checkpoints", init_train_state(config, norm), config)
    (run / "policy.json").write_text(json.dumps({"task": "pour", "obs_dim": 0, "action_dim": 15}))
    with pytest.raises(ValueError, match="trained for task 'pour', not 'grasp'"):
        fit("grasp", run, ("box_tea",), ("studio",), ResidualConfig(), tmp_path / "out")


def _toy(env):
    """The toy: hold the home pose; only the `reach` reward term counts, so moving the hand towards the object pays."""
    base = HomePolicy(jnp.asarray(env.home_action()), obs_dim=sum(env.obs_dims.values()))
    cfg = ResidualConfig(num_envs=16, num_minibatches=2, update_epochs=4, explore_steps=1, hidden=(64, 64), value_hidden=(64, 64),
                         lr=5e-3, alpha_pos=0.3, alpha_rot=0.0, alpha_hand=0.0, reward_scaling=1.0, entropy_cost=0.0, init_noise_std=0.3, seed=1)
    return base, cfg


@pytest.fixture(scope="module")
def toy():
    env = envs.make_cached("grasp", None, EnvConfig(episode_seconds=0.5, reward_scales=(("enclose", 0.0), ("lift", 0.0), ("success", 0.0))))
    base, cfg = _toy(env)
    spec = ResidualSpec.of_env(env)
    pool = env.make_scenes(env.sample_scenes(jax.random.PRNGKey(0), 32, envs.SceneSet(sample_poses=True)))
    return env, spec, cfg, rt.make_update(cfg, spec, (env,), base), (pool,)


def test_toy_run_improves_its_return(toy):
    """Holding the home pose scores about 1.0 per 25-step episode; moving the hand towards the object scores more.
    (Update 0 runs the base alone: epsilon starts at 0.)"""
    env, spec, cfg, update, pools = toy
    state = rt.init_state(cfg, spec)
    returns = []
    for u in range(24):
        state, m = update(state, pools, rt.update_key(cfg, u))
        returns.append(float(m["return"]))
    assert np.mean(returns[-4:]) > np.mean(returns[1:5]) + 0.1, returns


def test_resume_gives_the_same_parameters(toy, tmp_path):
    env, spec, cfg, update, pools = toy
    straight = rt.init_state(cfg, spec)
    for u in range(2):
        straight, _ = update(straight, pools, rt.update_key(cfg, u))
    first, _ = update(rt.init_state(cfg, spec), pools, rt.update_key(cfg, 0))
    meta = {"task": "grasp", "config": cfg.to_dict(), "spec": spec.to_dict(), "base": {"path": "toy", "sha256": "0"}}
    ckpt.save(tmp_path / "ck", first, meta)
    restored, saved = ckpt.restore(tmp_path / "ck")
    assert saved["updates"] == 1
    resumed, _ = update(restored, pools, rt.update_key(cfg, int(restored.updates)))
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_foreign_or_corrupt_residual_run_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no residual.json"):
        ckpt.read_run(tmp_path)
    for text, message in (("[1, 2]", "format 'list'"), ('{"format": "dexfly.diffusion/1"}', "format 'dexfly.diffusion/1'"),
                          ("{not json", "not valid JSON")):
        (tmp_path / ckpt.RUN_FILE).write_text(text)
        with pytest.raises(ValueError, match=message):
            ckpt.read_run(tmp_path)


def test_per_decision_picks_decision_steps_and_sums_each_hold():
    reward = jnp.arange(20, dtype=jnp.float32).reshape(2, 10)
    obs = jnp.arange(2 * 10 * 3, dtype=jnp.float32).reshape(2, 10, 3)
    dec = rt.per_decision({"obs": obs}, reward, 4)
    np.testing.assert_array_equal(dec["obs"], np.asarray(obs)[:, [0, 4, 8]])
    np.testing.assert_array_equal(dec["reward"], [[6, 22, 17], [46, 62, 37]])  # steps 0-3, 4-7, 8-9
    same = rt.per_decision({"obs": obs}, reward, 1)
    np.testing.assert_array_equal(same["reward"], reward)
    np.testing.assert_array_equal(same["obs"], obs)


def test_a_held_correction_stays_until_the_next_decision(grasp_short):
    """hold_steps = 4 over a 10-step episode: the sampled correction (the combined action minus the constant base
    action) is the same within steps 0-3, 4-7 and 8-9 and changes between them; the hook's carry starts from zeros
    that `unroll` makes itself (no initial carry is passed)."""
    env = grasp_short
    spec = ResidualSpec.of_env(env)
    cfg = ResidualConfig(hidden=(32, 32), value_hidden=(32,), init_noise_std=1.0, hold_steps=4)
    state = rt.init_state(cfg, spec)
    base = HomePolicy(jnp.asarray(env.home_action()), obs_dim=sum(env.obs_dims.values()))
    scenes = env.make_scenes(env.sample_scenes(jax.random.PRNGKey(3), 2, envs.SceneSet(sample_poses=True)))

    @jax.jit
    def run(key):
        start = env.batched(env.reset)(scenes, jax.random.split(key, 2))
        return unroll(env, base, start, key, num_steps=env.episode_steps, record=_record_action,
                      hook=functools.partial(rt.residual_hook, spec, cfg, False), hook_params=rt.HookParams(state.params.policy, state.normalizer, True))[1]

    pos = layout.split_action(np.asarray(run(jax.random.PRNGKey(0))), 1).pos[:, :, 0]  # [T, B, 3]
    assert pos.shape[0] == 10
    for window in (slice(0, 4), slice(4, 8), slice(8, 10)):
        np.testing.assert_array_equal(pos[window], np.broadcast_to(pos[window][:1], pos[window].shape))
    assert np.abs(pos[4] - pos[0]).max() > 1e-3 and np.abs(pos[8] - pos[4]).max() > 1e-3


def test_exported_held_residual_is_its_decision_then_combine():
    """For hold_steps > 1 the export adds the decision (residual_correction) and combine (residual_combine); at a
    decision step the two give residual_step's action (which tests/test_export.py checks against the hook)."""
    from dexfly.export.functions import residual_combine_function, residual_correction_function, residual_step_function

    spec = ResidualSpec(1, 1, ((0.0,) * 6,), ((1.4,) * 6,))
    cfg = ResidualConfig(hidden=(16,), value_hidden=(16,), hold_steps=8, obs_geometry=True)
    state = rt.init_state(cfg, spec)
    policy = jax.tree.map(lambda x: x + 0.1, state.params.policy)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    obs = jax.random.normal(k1, (3, spec.obs_layout.dim))
    base = jax.random.normal(k2, (3, spec.action_dim))
    half = jax.random.uniform(k3, (3, 1, 3), minval=0.01, maxval=0.05)
    step = residual_step_function(spec, cfg, policy, state.normalizer).fn(obs, base, half)
    correction = residual_correction_function(spec, cfg, policy, state.normalizer).fn(obs, base, half)
    assert correction.shape == (3, 12) and np.abs(np.asarray(correction)).max() > 1e-3
    np.testing.assert_array_equal(residual_combine_function(spec, cfg).fn(base, correction), step)


def test_envs_per_object_gives_each_object_the_same_share_of_episodes():
    cfg = ResidualConfig(num_envs=16, envs_per_object=4, num_minibatches=4)
    assert cfg.group_envs((6, 2, 2)) == (24, 8, 8)
    assert ResidualConfig(num_envs=16).group_envs((6, 2, 2)) == (16, 16, 16)  # 0: num_envs per topology group
    with pytest.raises(ValueError, match="not divisible by num_minibatches=4"):
        ResidualConfig(envs_per_object=3, num_minibatches=4).group_envs((1, 2))
    with pytest.raises(ValueError, match="envs_per_object must be >= 0"):
        ResidualConfig(envs_per_object=-1)


def test_kl_adaptive_lr_follows_its_rule():
    """/1.5 above twice the target KL, x1.5 below half of it, unchanged between, within the bounds, untouched by a
    minibatch without residual steps; desired_kl=0 keeps plain Adam at the fixed rate."""
    cfg = ResidualConfig(lr=1e-4, desired_kl=0.01, lr_bounds=(1e-5, 1.2e-4))
    params = {"w": jnp.zeros(3)}
    state = rt.make_optimizer(cfg).init(params)
    lr = lambda s: float(rt.learning_rate(cfg, s))  # noqa: E731
    assert lr(state) == pytest.approx(1e-4)
    for kl, measured, want in ((0.05, True, 1e-4 / 1.5), (0.015, True, 1e-4), (0.001, True, 1.2e-4), (0.05, False, 1e-4)):
        assert lr(rt.adapt_lr(cfg, state, jnp.float32(kl), jnp.bool_(measured))) == pytest.approx(want, rel=1e-6), (kl, measured)
    low = state
    for _ in range(20):
        low = rt.adapt_lr(cfg, low, jnp.float32(1.0), jnp.bool_(True))
    assert lr(low) == pytest.approx(1e-5)
    fixed = ResidualConfig(lr=1e-4)
    plain = rt.make_optimizer(fixed).init(params)
    assert rt.adapt_lr(fixed, plain, jnp.float32(1.0), jnp.bool_(True)) is plain
    assert float(rt.learning_rate(fixed, plain)) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="lr_bounds"):
        ResidualConfig(lr=1e-1, desired_kl=0.01)
    with pytest.raises(ValueError, match="desired_kl"):
        ResidualConfig(desired_kl=-1.0)


def test_kl_adaptive_run_adapts_and_resumes_exactly(toy, tmp_path):
    """The toy's 5e-3 moves the policy far more than a KL of 1e-3 per minibatch: the rate comes down, and a run
    resumed from a checkpoint (the rate lives in the optimiser state) continues bit for bit."""
    env, spec, cfg, _, pools = toy
    base, _ = _toy(env)
    cfg = cfg.replace(desired_kl=1e-3)
    update = rt.make_update(cfg, spec, (env,), base)
    straight = rt.init_state(cfg, spec)
    rates = []
    for u in range(2):
        straight, m = update(straight, pools, rt.update_key(cfg, u))
        rates.append(float(m["lr"]))
    assert rates[0] == pytest.approx(5e-3)  # update 0 runs the base alone: no KL, the rate stays
    assert float(rt.learning_rate(cfg, straight.opt_state)) < 5e-3 / 1.5, rates
    first, _ = update(rt.init_state(cfg, spec), pools, rt.update_key(cfg, 0))
    ckpt.save(tmp_path / "ck", first, {"task": "grasp", "config": cfg.to_dict(), "spec": spec.to_dict(), "base": {"path": "toy", "sha256": "0"}})
    restored, _ = ckpt.restore(tmp_path / "ck")
    resumed, _ = update(restored, pools, rt.update_key(cfg, 1))
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
