"""Tests of the state-based Diffusion Policy (dexfly.policies.diffusion). Tiny models, CPU-friendly."""

import dexfly  # noqa: F401  (XLA flags before jax)

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dexfly.policies.diffusion import (DiffusionConfig, DiffusionPolicy, MinMax, Normalizer, add_noise,
                                       batch_indices, ddim_sample, fit, history_init, history_push,
                                       latest_step, load_policy, restore, make_schedule, make_window_data,
                                       restore_latest, sample_actions, save_checkpoint, window_indices)
from dexfly.policies.diffusion.schedule import ddim_timesteps, squaredcos_cap_v2_betas

OBS_DIM, ACT_DIM = 5, 3
CFG = DiffusionConfig.tiny(total_steps=400)  # (16, 32) widths, batch 32, lr 3e-3


def _episodes(n=2, T=30):
    """Smooth, distinct trajectories; obs dim 4 is constant (exercises the normaliser's constant dims)."""
    eps = []
    for e in range(n):
        t = np.linspace(0, 1, T, dtype=np.float32)
        ph = 1.3 * e
        obs = np.stack([np.sin(3 * t + ph), np.cos(2 * t + ph), t, np.full_like(t, e), np.full_like(t, 0.7)], -1)
        act = np.stack([np.sin(3 * t + ph + 0.2), 0.5 * np.cos(2 * t + ph), t ** 2 + e], -1) * 10.0
        eps.append({"obs": obs.astype(np.float32), "actions": act.astype(np.float32)})
    return eps


EPISODES = _episodes()


def _tree_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("diffusion") / "run")


@pytest.fixture(scope="module")
def trained(ckpt_dir):
    """300 steps of the tiny model (3 scan chunks of 100, one compile), checkpointed at 100, 200, 300."""
    return fit(EPISODES, CFG, num_steps=300, scan_steps=100, progress=False, checkpoint_dir=ckpt_dir,
               checkpoint_every=100)


# ---------------------------------------------------------------- normaliser

def test_normalizer_round_trip_and_range():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 6)).astype(np.float32) * np.array([1, 10, 0.1, 5, 1, 1], np.float32) + 3.0
    x[:, 4] = 2.5  # constant dim
    x[:, 5] = 0.0  # constant zero dim
    m = MinMax.fit(x)
    y = np.asarray(m.normalize(jnp.asarray(x)))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y[:, :4].min(0), -1.0, atol=1e-6)
    np.testing.assert_allclose(y[:, :4].max(0), 1.0, atol=1e-6)
    np.testing.assert_array_equal(y[:, 4:], 0.0)  # constant dims map to 0
    np.testing.assert_allclose(np.asarray(m.unnormalize(jnp.asarray(y))), x, rtol=1e-5, atol=1e-5)
    noisy = np.asarray(m.unnormalize(jnp.asarray(y + 0.05)))  # a model's output is never exactly 0 on a constant dim
    np.testing.assert_array_equal(noisy[:, 4:], x[:, 4:])  # ... and the constant comes back as it is
    np.testing.assert_allclose(noisy[:, :4], np.asarray(m.unnormalize(jnp.asarray(y)))[:, :4] + 0.05 / np.asarray(m.scale[:4]), rtol=1e-5)
    n = Normalizer.fit(x, x[:, :2])
    assert n.obs.dim == 6 and n.action.dim == 2
    # jittable pytree
    np.testing.assert_allclose(jax.jit(lambda m, v: m.normalize(v))(m, jnp.asarray(x)), y, atol=1e-6)


# ---------------------------------------------------------------- schedule

def test_schedule_known_values():
    N = 100
    s = make_schedule(N)
    betas, ac = np.asarray(s.betas, np.float64), np.asarray(s.alphas_cumprod, np.float64)
    abar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert betas.shape == ac.shape == (N,)
    np.testing.assert_allclose(ac[0], 1.0 - betas[0], rtol=1e-7)
    np.testing.assert_allclose(betas[0], 1 - abar(1 / N) / abar(0), rtol=1e-5)
    assert abs(betas[0] - 6.313e-4) < 1e-6  # = 1 - cos(0.018/1.008*pi/2)**2 / cos(0.008/1.008*pi/2)**2
    # alphas_cumprod[t] = abar((t+1)/N) / abar(0) while the 0.999 cap is inactive
    for t in (10, 49, 90):
        np.testing.assert_allclose(ac[t], abar((t + 1) / N) / abar(0), rtol=1e-4)
    assert betas[-1] == pytest.approx(0.999)  # capped
    assert np.all(np.diff(ac) < 0) and np.all(np.diff(betas) > 0)
    assert np.all(squaredcos_cap_v2_betas(N) <= 0.999)
    np.testing.assert_array_equal(ddim_timesteps(100, 10), np.arange(90, -1, -10))


def test_add_noise_and_ddim_with_oracle_denoiser():
    s = make_schedule(100)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x0 = jax.random.uniform(k1, (4, 16, 3), minval=-0.9, maxval=0.9)
    noise = jax.random.normal(k2, x0.shape)
    xt = add_noise(s, x0, noise, jnp.array([0, 10, 50, 99]))
    a = s.alphas_cumprod[10]
    np.testing.assert_allclose(xt[1], jnp.sqrt(a) * x0[1] + jnp.sqrt(1 - a) * noise[1], rtol=1e-6)
    # A perfect epsilon predictor for a known x0 makes DDIM return x0 exactly (up to float error).
    oracle = lambda x, t: (x - jnp.sqrt(s.alphas_cumprod[t])[:, None, None] * x0) / jnp.sqrt(  # noqa: E731
        1 - s.alphas_cumprod[t])[:, None, None]
    out = ddim_sample(oracle, s, noise, 10)
    np.testing.assert_allclose(out, x0, atol=1e-4)


# ---------------------------------------------------------------- data windows

def test_window_indices_at_episode_borders():
    oi, ai = window_indices([4, 3], obs_horizon=2, pred_horizon=3)
    assert oi.shape == (7, 2) and ai.shape == (7, 3)
    np.testing.assert_array_equal(oi, [[0, 0], [0, 1], [1, 2], [2, 3], [4, 4], [4, 5], [5, 6]])
    np.testing.assert_array_equal(ai, [[0, 1, 2], [1, 2, 3], [2, 3, 3], [3, 3, 3], [4, 5, 6], [5, 6, 6], [6, 6, 6]])
    oi3, _ = window_indices([5], obs_horizon=3, pred_horizon=2)
    np.testing.assert_array_equal(oi3[:3], [[0, 0, 0], [0, 0, 1], [0, 1, 2]])


def test_window_data_gather_and_batches():
    data, norm = make_window_data(EPISODES, CFG.obs_horizon, CFG.pred_horizon)
    assert data.num_windows == 60
    o, a = data.gather(jnp.array([30, 59]))
    assert o.shape == (2, 2, OBS_DIM) and a.shape == (2, 16, ACT_DIM)
    raw_o = norm.obs.unnormalize(o)
    np.testing.assert_allclose(raw_o[0, 0], EPISODES[1]["obs"][0], atol=1e-5)  # padded with first obs
    np.testing.assert_allclose(raw_o[0, 1], EPISODES[1]["obs"][0], atol=1e-5)
    raw_a = norm.action.unnormalize(a)
    np.testing.assert_allclose(raw_a[1], np.repeat(EPISODES[1]["actions"][-1:], 16, 0), rtol=1e-5, atol=1e-4)
    key = jax.random.PRNGKey(0)
    # N >= B: one epoch is a permutation
    ep = np.concatenate([np.asarray(batch_indices(key, jnp.int32(s), 60, 20)) for s in range(3)])
    np.testing.assert_array_equal(np.sort(ep), np.arange(60))
    assert not np.array_equal(ep, np.arange(60))
    # N < B: still valid indices, every window appears
    b = np.asarray(batch_indices(key, jnp.int32(0), 60, 100))
    assert b.shape == (100,) and b.min() >= 0 and b.max() < 60 and len(np.unique(b)) == 60


# ---------------------------------------------------------------- training

def test_tiny_model_overfits(trained):
    losses = trained.losses
    assert losses.shape == (300,) and np.all(np.isfinite(losses))
    first, last = losses[:10].mean(), losses[-20:].mean()
    assert first / last >= 10.0, (first, last)
    assert int(trained.state.step) == 300


def test_policy_sampling_shapes_and_finite(trained):
    policy = DiffusionPolicy.from_state(trained.state, CFG)
    assert policy.action_horizon == 8 and policy.obs_dim == OBS_DIM and policy.action_dim == ACT_DIM
    ep = EPISODES[0]
    hist = history_push(history_init(jnp.asarray(ep["obs"][0]), 2), jnp.asarray(ep["obs"][1]))
    assert hist.shape == (2, OBS_DIM)
    obs_b = jnp.stack([hist, hist, jnp.asarray(EPISODES[1]["obs"][:2])])
    key = jax.random.PRNGKey(1)
    chunk = policy(obs_b, key)
    assert chunk.shape == (3, 16, ACT_DIM) and bool(jnp.all(jnp.isfinite(chunk)))
    # unbatched call and vmap over an extra axis
    assert sample_actions(policy, hist, key).shape == (16, ACT_DIM)
    vm = jax.vmap(sample_actions, in_axes=(None, 0, 0))(policy, jnp.stack([obs_b, obs_b]), jax.random.split(key, 2))
    assert vm.shape == (2, 3, 16, ACT_DIM)


# ---------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip_identical_outputs(trained, tmp_path):
    d = str(tmp_path / "ckpt")
    save_checkpoint(d, trained.state, CFG)
    restored = restore_latest(d, CFG, obs_dim=OBS_DIM, action_dim=ACT_DIM)
    assert _tree_equal(restored, trained.state)
    assert type(restored.opt_state) is type(trained.state.opt_state)
    obs = jnp.asarray(EPISODES[0]["obs"][:2])[None]
    key = jax.random.PRNGKey(3)
    a = DiffusionPolicy.from_state(trained.state, CFG)(obs, key)
    b = DiffusionPolicy.from_state(restored, CFG)(obs, key)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    pol, cfg = load_policy(d)
    assert cfg == CFG
    np.testing.assert_array_equal(np.asarray(pol(obs, key)), np.asarray(a))
    assert restore_latest(str(tmp_path / "empty"), CFG) is None


def test_resume_equals_straight_training(trained, ckpt_dir, tmp_path):
    """Train 200, save, restore, train 100 more == train 300 straight (the fixture), bit for bit."""
    assert latest_step(ckpt_dir) == 300
    mid = restore(ckpt_dir, CFG, step=200)
    assert int(mid.step) == 200
    d = str(tmp_path / "resume")
    save_checkpoint(d, mid, CFG)
    resumed = fit(EPISODES, CFG, num_steps=100, scan_steps=100, progress=False, checkpoint_dir=d)  # resumes at 200
    assert int(resumed.state.step) == 300 and latest_step(d) == 300
    assert _tree_equal(resumed.state, trained.state)
    np.testing.assert_array_equal(resumed.losses, trained.losses[200:])


def test_mismatched_config_raises(trained, tmp_path, monkeypatch):
    d = str(tmp_path / "mismatch")
    save_checkpoint(d, trained.state, CFG)
    with pytest.raises(ValueError, match=r"down_dims: .* has \(16, 32\), requested \(16, 64\)"):
        restore_latest(d, CFG.replace(down_dims=(16, 64)))
    with pytest.raises(ValueError, match="pred_horizon"):
        restore_latest(d, CFG.replace(pred_horizon=8))
    with pytest.raises(ValueError, match="obs_dim: .* has 5, requested 7"):
        restore_latest(d, CFG, obs_dim=7)
    # relative directories resolve against the working directory (orbax itself needs absolute paths)
    monkeypatch.chdir(tmp_path)
    save_checkpoint("relative/dir", trained.state, CFG)
    assert latest_step(str(tmp_path / "relative" / "dir")) == int(trained.state.step)
    assert latest_step("relative/dir") == int(trained.state.step)


def test_config_validation():
    with pytest.raises(ValueError, match="pred_horizon"):
        DiffusionConfig(pred_horizon=10)
    assert DiffusionConfig.paper().down_dims == (256, 512, 1024)
    assert DiffusionConfig.from_dict(CFG.to_dict()) == CFG


# ---------------------------------------------------------------- quaternion observation features

def _fit_with_features(obs, cfg, rng, checkpoint_dir):
    """Two training steps on one episode of raw `obs` [T, D] with cfg's observation features, checkpointed; the
    config round-trips, and the policy takes raw observations while the state is in feature space."""
    assert DiffusionConfig.from_dict(cfg.to_dict()) == cfg
    eps = [{"obs": obs, "actions": rng.normal(size=(obs.shape[0], ACT_DIM)).astype(np.float32)}]
    res = fit(eps, cfg, num_steps=2, progress=False, checkpoint_dir=checkpoint_dir)
    policy = DiffusionPolicy.from_state(res.state, cfg)
    assert policy.obs_dim == obs.shape[1] and res.state.obs_dim == obs.shape[1] + cfg.obs_extra_dims
    return policy


def test_obs_features_sign_invariant_and_policy_dims(tmp_path):
    from dexfly.geometry import quat_normalize
    from dexfly.policies.diffusion.data import obs_features

    rng = np.random.default_rng(1)
    q = np.asarray(quat_normalize(rng.normal(size=(7, 4))), np.float32)
    obs = np.concatenate([rng.normal(size=(7, 2)), q, rng.normal(size=(7, 1))], -1).astype(np.float32)
    flipped = obs.copy()
    flipped[:, 2:6] *= -1
    f, g = obs_features(obs, (2,)), np.asarray(obs_features(jnp.asarray(flipped), (2,)))
    assert f.shape == (7, 9) and np.allclose(f, g, atol=1e-6)
    assert np.array_equal(f[:, :2], obs[:, :2]) and np.array_equal(f[:, -1], obs[:, -1])
    assert obs_features(obs, ()) is obs

    cfg = CFG.replace(obs_quat_at=(2,))
    assert cfg.obs_extra_dims == 2
    d = str(tmp_path / "q")
    policy = _fit_with_features(obs, cfg, rng, d)
    hist = jnp.asarray(obs[None, :2]).repeat(2, 0)
    a = policy(hist, jax.random.PRNGKey(0))
    b = policy(hist.at[:, :, 2:6].multiply(-1), jax.random.PRNGKey(0))
    assert a.shape == (2, cfg.pred_horizon, ACT_DIM) and np.allclose(a, b, atol=1e-5)
    loaded, lcfg = load_policy(d)
    assert lcfg.obs_quat_at == (2,) and loaded.obs_dim == 7
    assert restore_latest(d, cfg, obs_dim=9) is not None
    with pytest.raises(ValueError, match="obs_quat_at"):
        restore_latest(d, cfg.replace(obs_quat_at=()))


def test_relative_position_features(tmp_path):
    """obs_rel_pos appends position differences (after the rot6d swap), the config round-trips, a policy trained
    with them samples from raw observations, and a checkpoint refuses a config without them."""
    from dexfly.policies.diffusion.data import obs_features

    rng = np.random.default_rng(2)
    obs = rng.normal(size=(9, 10)).astype(np.float32)
    f = obs_features(obs, (), ((0, 6), (6, 3)))
    assert f.shape == (9, 16)
    np.testing.assert_array_equal(f[:, :10], obs)
    np.testing.assert_allclose(f[:, 10:13], obs[:, 0:3] - obs[:, 6:9])
    np.testing.assert_allclose(f[:, 13:16], obs[:, 6:9] - obs[:, 3:6])
    with pytest.raises(ValueError, match="obs_rel_pos"):
        CFG.replace(obs_rel_pos=((1, 1),))

    cfg = CFG.replace(obs_rel_pos=((0, 6),))
    assert cfg.obs_extra_dims == 3
    d = str(tmp_path / "rel")
    policy = _fit_with_features(obs, cfg, rng, d)
    assert policy(jnp.asarray(obs[None, :2]), jax.random.PRNGKey(0)).shape == (1, cfg.pred_horizon, ACT_DIM)
    with pytest.raises(ValueError, match="obs_rel_pos"):
        restore_latest(d, cfg.replace(obs_rel_pos=()))


def test_phase_feature(tmp_path):
    """phase_steps appends each step's phase, min(t / N, 1), to the training windows' observations and, from
    `step`, to each history row at inference (rows before the reset count as step 0, as in the windows); the
    sampled chunk depends on it, a phase policy refuses to sample without it, and other policies ignore it."""
    from dexfly.policies.diffusion.data import history_steps, phase_feature

    np.testing.assert_array_equal(np.asarray(history_steps(jnp.asarray([0, 1, 5]), 3)), [[0, 0, 0], [0, 0, 1], [3, 4, 5]])
    np.testing.assert_allclose(phase_feature(np.array([0, 10, 30]), 20)[:, 0], [0.0, 0.5, 1.0])
    rng = np.random.default_rng(3)
    obs = rng.normal(size=(12, 4)).astype(np.float32)
    eps = [{"obs": obs, "actions": np.zeros((12, ACT_DIM), np.float32)}, {"obs": obs[:5], "actions": np.zeros((5, ACT_DIM), np.float32)}]
    data, norm = make_window_data(eps, 2, 4, phase_steps=8)
    raw_phase = norm.obs.unnormalize(data.obs)[:, -1]
    np.testing.assert_allclose(raw_phase, np.r_[np.minimum(np.arange(12) / 8, 1), np.arange(5) / 8], atol=1e-6)
    with pytest.raises(ValueError, match="phase_steps"):
        CFG.replace(phase_steps=-1)

    cfg = CFG.replace(phase_steps=8)
    assert cfg.obs_extra_dims == 1
    policy = _fit_with_features(obs, cfg, rng, str(tmp_path / "phase"))
    hist = jnp.asarray(obs[None, :2]).repeat(2, 0)
    a = policy(hist, jax.random.PRNGKey(0), jnp.asarray([1, 1]))
    b = policy(hist, jax.random.PRNGKey(0), jnp.asarray([1, 7]))
    assert np.allclose(a[0], b[0]) and not np.allclose(a[1], b[1], atol=1e-4)
    with pytest.raises(ValueError, match="phase"):
        policy(hist, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="phase_steps"):
        restore_latest(str(tmp_path / "phase"), cfg.replace(phase_steps=0))
    assert policy.uses_phase
    other = _fit_with_features(obs, CFG, rng, str(tmp_path / "plain"))
    np.testing.assert_array_equal(other(hist, jax.random.PRNGKey(0)), other(hist, jax.random.PRNGKey(0), jnp.asarray([3, 9])))


def test_geometry_feature(tmp_path):
    """obs_geometry N appends the episode's first N objects' half-extents to every training window's observations and
    to each history row at inference; the sampled chunk depends on them, a geometry policy refuses to sample without
    them, a checkpoint without geometry is refused for a config with it, and the training episodes carry the
    catalog's sizes (the closed-loop path: tests/test_flywheel or the unroll pass the env's)."""
    from dexfly.dataset import policy_training_episodes, read_dataset
    from dexfly.paths import DEMOS_DIR
    from dexfly.policies.diffusion.data import geometry_feature

    rng = np.random.default_rng(4)
    obs = rng.normal(size=(12, 4)).astype(np.float32)
    half = np.array([[0.02, 0.03, 0.04], [0.05, 0.06, 0.07]], np.float32)
    np.testing.assert_array_equal(geometry_feature(half, 1), half[0])
    with pytest.raises(ValueError, match="need"):
        geometry_feature(half, 3)
    eps = [{"obs": obs, "actions": np.zeros((12, ACT_DIM), np.float32), "half_extents": half},
           {"obs": obs[:5], "actions": np.zeros((5, ACT_DIM), np.float32), "half_extents": half * 2}]
    data, norm = make_window_data(eps, 2, 4, geometry=2)
    raw = norm.obs.unnormalize(data.obs)[:, -6:]
    np.testing.assert_allclose(raw, np.r_[np.tile(half.reshape(-1), (12, 1)), np.tile(2 * half.reshape(-1), (5, 1))], atol=1e-6)
    with pytest.raises(ValueError, match="half_extents"):
        make_window_data([{"obs": obs, "actions": eps[0]["actions"]}], 2, 4, geometry=1)
    with pytest.raises(ValueError, match="obs_geometry"):
        CFG.replace(obs_geometry=-1)

    cfg = CFG.replace(obs_geometry=1)
    assert cfg.obs_extra_dims == 3
    eps = [{"obs": obs, "actions": rng.normal(size=(12, ACT_DIM)).astype(np.float32), "half_extents": half},
           {"obs": obs, "actions": rng.normal(size=(12, ACT_DIM)).astype(np.float32), "half_extents": half * 2}]
    policy = DiffusionPolicy.from_state(fit(eps, cfg, num_steps=2, progress=False, checkpoint_dir=str(tmp_path / "geo")).state, cfg)
    assert policy.uses_geometry and policy.obs_dim == 4
    hist = jnp.asarray(obs[None, :2]).repeat(2, 0)
    a = policy(hist, jax.random.PRNGKey(0), None, jnp.asarray(np.stack([half, half])))
    b = policy(hist, jax.random.PRNGKey(0), None, jnp.asarray(np.stack([half, 2 * half])))
    assert np.allclose(a[0], b[0]) and not np.allclose(a[1], b[1], atol=1e-4)
    with pytest.raises(ValueError, match="half_extents"):
        policy(hist, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="obs_geometry"):
        restore_latest(str(tmp_path / "geo"), CFG)

    seed = read_dataset(DEMOS_DIR / "grasp_seed.hdf5", task="grasp").episodes[0]
    (ep,) = policy_training_episodes([seed], geometry=True)
    assert ep["half_extents"].shape == (1, 3) and np.allclose(ep["half_extents"], 0.025)  # the 5 cm cube


def test_obs_layout_slots():
    """Every (arm, object) pair points at the arm's ee position and the object's position in obs_vector; the
    quaternion slots are the objects' and the end effectors' quaternions; a partial block is refused."""
    from dexfly.layout import ObsLayout

    lay = ObsLayout.from_obs_dims({"obj": 26, "prop": 54})
    assert lay == ObsLayout(2, 2) and lay.dim == 80
    assert lay.relative_position_pairs() == ((46, 0), (46, 13), (73, 0), (73, 13))
    assert lay.quaternion_slots() == (3, 16, 49, 76)
    with pytest.raises(ValueError, match="unexpected observation layout"):
        ObsLayout.from_obs_dims({"obj": 26, "prop": 50})


def test_warm_start_refuses_another_tasks_run(tmp_path):
    """A base warm-started from another task's run folder (train_diffusion.py --init-from, the flywheel's warm start)
    is a clear error naming both tasks, before any checkpoint is read."""
    import json

    from dexfly.policies.diffusion.run import warm_start_state

    run = tmp_path / "pour_run"
    run.mkdir()
    (run / "policy.json").write_text(json.dumps({"task": "pour"}))
    with pytest.raises(ValueError, match="it is a 'pour' policy, not 'grasp'"):
        warm_start_state(run, CFG, EPISODES, task="grasp")
    with pytest.raises(FileNotFoundError, match="no policy.json"):
        warm_start_state(tmp_path / "missing", CFG, EPISODES, task="grasp")
