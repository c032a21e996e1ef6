"""Data parallelism over two devices gives the numbers of one device (dexfly.devices).

XLA fixes the CPU device count when jax starts, so the comparison runs in a subprocess started with
`XLA_FLAGS=--xla_force_host_platform_device_count=2` (this file, run as a script), whatever number of devices dexfly
split the CPU of the suite's own processes into (`dexfly._jax_env.cpu_device_count`). The subprocess runs each stage
twice, unsharded (devices=1, no mesh) and split over the two devices: a small augmentation batch (2 Grasp attempts,
full episodes), 20 steps of the tiny diffusion network, two updates of a tiny residual-PPO config, and PPO's
learning half (`make_learn`: epochs of minibatch gradient steps) on one fixed batch of transitions, and MuJoCo Warp
envs stepped under the mesh (`devices.use_mesh`); and it checks that a chunked env batch (`TaskEnv.batched` on the
CPU) split over the devices compiles with no cross-device collective; it prints the results as one JSON line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dexfly  # noqa: F401  (XLA flags + persistent compilation cache before jax is imported)
import numpy as np
import pytest

RESULT_PREFIX = "MULTI_DEVICE_RESULT "


# ---------------------------------------------------------------- the subprocess (two host devices)
def _augmentation(mesh):
    from dexfly import dataset
    from dexfly.augment import AugmentConfig, augment
    from dexfly.paths import DEMOS_DIR
    from envs.base import EnvConfig

    seed = dataset.read_dataset(DEMOS_DIR / "grasp_seed.hdf5", task="grasp").episodes[0]
    # The seed's own pose and a shifted one, full 6 s episodes: the attempts can succeed (or fail) for real.
    caug = AugmentConfig(pose_ids=("p00", "p03"), env_ids=("studio",), keep_failed=True, bridge_steps=5, env=EnvConfig())
    eps, stats = augment([seed], "grasp", caug, num_wanted=2, batch_size=2, max_attempts=2, seed=3, progress=False, mesh=mesh)
    return {"success": [bool(ep.success) for ep in eps], "successes": stats.successes,
            "obj": np.stack([ep.obs["obj"] for ep in eps]), "actions": np.stack([ep.actions for ep in eps])}


def _diffusion(mesh):
    import jax

    from dexfly.policies.diffusion import DiffusionConfig, fit

    t = np.linspace(0, 1, 30, dtype=np.float32)
    episodes = [{"obs": np.stack([np.sin(3 * t + e), np.cos(2 * t + e), t, np.full_like(t, e), np.full_like(t, 0.7)], -1),
                 "actions": (10.0 * np.stack([np.sin(3 * t + e + 0.2), 0.5 * np.cos(2 * t + e), t ** 2 + e], -1)).astype(np.float32)}
                for e in range(2)]
    res = fit(episodes, DiffusionConfig.tiny(total_steps=20), num_steps=20, scan_steps=10, progress=False, mesh=mesh)
    return {"losses": np.asarray(res.losses), "params": np.concatenate([np.ravel(x) for x in jax.tree.leaves(res.state.params)])}


def _ppo(mesh):
    import jax
    import jax.numpy as jnp

    import envs
    from dexfly import devices
    from dexfly.policies.residual import ResidualConfig, ResidualSpec
    from dexfly.policies.residual import train as rt
    from envs.base import EnvConfig

    from test_residual import HomePolicy  # the toy base of tests/test_residual.py

    env = envs.make_cached("grasp", None, EnvConfig(episode_seconds=0.2, reward_scales=(("enclose", 0.0), ("lift", 0.0), ("success", 0.0))))
    base = HomePolicy(jnp.asarray(env.home_action()), obs_dim=sum(env.obs_dims.values()))
    cfg = ResidualConfig(num_envs=4, num_minibatches=2, update_epochs=2, explore_steps=1, hidden=(16, 16), value_hidden=(16,), lr=5e-3,
                         alpha_pos=0.3, alpha_rot=0.0, alpha_hand=0.0, reward_scaling=1.0, init_noise_std=0.3, seed=1)
    spec = ResidualSpec.of_env(env)
    pools = devices.replicate((env.make_scenes(env.sample_scenes(jax.random.PRNGKey(0), 8, envs.SceneSet(sample_poses=True))),), mesh)
    update = rt.make_update(cfg, spec, (env,), base, mesh)
    state, returns = devices.replicate(rt.init_state(cfg, spec), mesh), []
    for u in range(2):  # update 0 runs the base alone (epsilon 0), update 1 the residual everywhere
        state, metrics = update(state, pools, rt.update_key(cfg, u))
        returns.append(float(metrics["return"]))  # also waits for the update: XLA:CPU deadlocks on queued sharded steps
    return {"returns": np.asarray(returns), "params": np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)])}


def _ppo_learn(mesh):
    """PPO's gradient steps (`train.make_learn`, the half of an update after the rollout) on one fixed batch: 16
    episodes of 6 decisions, random features, rewards and residual samples (their log-likelihoods from the initial
    policy), 2 epochs of 2 minibatches, the minibatches split over the devices. Identical inputs isolate the sharded
    gradient: in the full updates above, the devices' physics differs in the last bits, the observation normaliser
    magnifies that in near-constant features (traced with plain SGD: update 0's observations 2.2e-4 apart, the value
    weights 1.6e-3 by update 1), so from update 2 on the returns part by about 1% (measured) whatever the gradient."""
    import jax

    import envs
    from brax.training.acme import running_statistics
    from brax.training.types import Transition
    from dexfly import devices
    from dexfly.policies.residual import ResidualConfig, ResidualSpec
    from dexfly.policies.residual import train as rt
    from dexfly.policies.residual.networks import make_networks

    cfg = ResidualConfig(num_minibatches=2, update_epochs=2, hidden=(16, 16), value_hidden=(16,), lr=5e-3, init_noise_std=0.3, seed=1)
    spec = ResidualSpec.of_env(envs.make_cached("grasp", None, None))
    b, d, f = 16, 6, spec.feature_dim(cfg)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(b, d, f)).astype(np.float32)
    raw = (0.3 * rng.normal(size=(b, d, spec.residual_dim))).astype(np.float32)
    state = rt.init_state(cfg, spec)
    state = state.replace(normalizer=running_statistics.update(state.normalizer, obs.reshape(-1, f)))
    network = make_networks(spec, cfg)
    logits = network.policy_network.apply(state.normalizer, state.params.policy, obs)
    log_prob = np.asarray(network.parametric_action_distribution.log_prob(logits, raw))
    discount = np.ones((b, d), np.float32)
    discount[:, -1] = 0.0
    data = Transition(observation=obs, action=raw, reward=rng.normal(size=(b, d)).astype(np.float32), discount=discount, next_observation=obs,
                      extras={"policy_extras": {"raw_action": raw, "log_prob": log_prob}, "state_extras": {}})
    active, valid = np.arange(b) % 4 != 0, np.ones(b, bool)  # a quarter of the episodes ran the base alone
    learn = jax.jit(rt.make_learn(cfg, spec, b, mesh))
    new, losses = learn(devices.replicate(state, mesh), data, active, valid, jax.random.PRNGKey(3))
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(tree))])  # noqa: E731
    params = flat(new.params)
    return {"params": params, "moved": np.asarray([np.max(np.abs(params - flat(state.params)))]),
            "policy_loss": np.asarray(losses["policy_loss"]).ravel(), "v_loss": np.asarray(losses["v_loss"]).ravel()}


def _chunked_batch(mesh) -> dict:
    """`TaskEnv.batched`'s CPU chunking (lax.map over chunks of vmapped envs) on a batch split over the devices: its
    results, and the cross-device collectives in the compiled program. Chunks of contiguous envs compiled to an
    all-gather (every device ran every chunk, or one device's envs at a time); strided chunks need none."""
    from types import SimpleNamespace

    import jax
    import jax.numpy as jnp

    from dexfly import devices
    from envs.base import EnvConfig, TaskEnv

    fn = lambda x: {"y": jnp.sin(x).sum() * x}  # noqa: E731  (a per-env function; the chunking is what is tested)
    xs = devices.shard_batch(jnp.arange(16 * 3.0).reshape(16, 3), mesh)
    step = jax.jit(TaskEnv.batched(SimpleNamespace(cpu_vmap_chunk=4, config=EnvConfig()), fn))
    hlo = step.lower(xs).compile().as_text()
    return {"y": np.asarray(step(xs)["y"]),
            "collectives": sorted(set(re.findall(r"all-gather|all-to-all|collective-permute|all-reduce|reduce-scatter", hlo)))}


WARP_RAISED = (0, 3, 6)  # `_warp`'s envs whose object starts 30 cm up: still falling after 10 control steps


def _hold_home(params, carry, step, key):
    """Unroll hook: every env holds the home action (`params` [B, A])."""
    return carry, params, None


def _qpos_and_table_contact(env, step, action, after, extras):
    """Unroll record: qpos [B, nq] and whether each env's object touches the table [B] (`TaskEnv.touching`)."""
    touching = env.batched(lambda d: env.touching(d, env.geom_ids("object_g"), env.geom_ids("table")))(after.data)
    return {"qpos": after.data.qpos, "touching": touching}


def _warp(mesh) -> dict | None:
    """MuJoCo Warp envs through `unroll.jit_unroll` (evaluation's and collection's path, which traces in
    `devices.use_mesh`): 8 Grasp scenes, three objects dropped from 30 cm, reset and 10 control steps at home ->
    final qpos, whether each object touches the table, and the worlds each Warp call was sized for (8 unsharded, 4
    on each of two devices). None without mujoco-warp."""
    try:
        import mujoco_warp  # noqa: F401
    except ImportError:
        return None
    import functools

    import jax
    import jax.numpy as jnp

    import envs
    from dexfly.unroll import jit_unroll

    env = envs.make("grasp", envs.EnvConfig(impl="warp"))  # a fresh env: its data templates are this call's alone
    b = 8
    scenes = env.make_scenes(env.sample_scenes(jax.random.PRNGKey(0), b, envs.SceneSet(sample_poses=True)))
    scenes = scenes.replace(object_pose=scenes.object_pose.at[np.asarray(WARP_RAISED), 0, 2].add(0.3))
    home = jnp.broadcast_to(jnp.asarray(env.home_action()), (b, env.action_dim))
    run = jit_unroll(env, 10, _hold_home, functools.partial(_qpos_and_table_contact, env), mesh)
    _, rec = run(None, scenes, jax.random.PRNGKey(1), home, None)
    return {"qpos": np.asarray(rec["qpos"][-1]), "touching": np.asarray(rec["touching"][-1]), "worlds_per_call": sorted(env._warp_templates)}


def _compare(one: dict, two: dict) -> dict:
    """Per key: exact equality and the largest absolute difference."""
    out = {}
    for k in one:
        a, b = np.asarray(one[k], np.float64), np.asarray(two[k], np.float64)
        out[k] = {"equal": bool(np.array_equal(a, b)), "max_abs_diff": float(np.max(np.abs(a - b))) if a.size else 0.0,
                  "one": a.tolist() if a.size <= 32 else None, "two": b.tolist() if b.size <= 32 else None}
    return out


def main() -> None:
    import time

    import jax

    from dexfly import devices

    sys.path.insert(0, str(Path(__file__).parent))
    assert jax.device_count() == 2, jax.devices()
    mesh = devices.make_mesh(None)
    assert devices.make_mesh(1) is None and mesh is not None and devices.size(mesh) == 2
    try:
        devices.check_batch(3, mesh, "batch_size")
        raise AssertionError("an odd batch over 2 devices was accepted")
    except ValueError as e:
        batch_error = str(e)
    one, two = _chunked_batch(None), _chunked_batch(mesh)
    report = {"batch_error": batch_error, "seconds": {}, "chunked_collectives": two.pop("collectives")}
    one.pop("collectives")
    report["chunked"] = _compare(one, two)
    one, two = _warp(None), _warp(mesh)
    if one is not None:
        report["warp_worlds_per_call"] = [one.pop("worlds_per_call"), two.pop("worlds_per_call")]
        report["warp_touching"] = [one["touching"].tolist(), two["touching"].tolist()]
        report["warp"] = _compare(one, two)
    for name, stage in (("augment", _augmentation), ("diffusion", _diffusion), ("ppo", _ppo), ("ppo_learn", _ppo_learn)):
        t0 = time.perf_counter()
        report[name] = _compare(stage(None), stage(mesh))
        report["seconds"][name] = round(time.perf_counter() - t0, 1)
    print(RESULT_PREFIX + json.dumps(report), flush=True)


# ---------------------------------------------------------------- the test
@pytest.fixture(scope="module")
def report():
    env = dict(os.environ)
    # replace the device count dexfly's own processes got (dexfly._jax_env.cpu_device_count), not add a second one
    flags = re.sub(r"--xla_force_host_platform_device_count=\S*", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = " ".join(flags.split() + ["--xla_force_host_platform_device_count=2"])
    # a guard against a hang, not a speed bound: with an empty compilation cache and the CPU shared (the suite's
    # other worker, a run beside it) the subprocess's compiles took over 600 s (session 35); warm it runs ~80 s
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=1500, cwd=Path(__file__).parents[1])
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert proc.returncode == 0 and lines, f"subprocess failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def test_two_devices_match_one(report):
    print(json.dumps(report, indent=1))  # the measured differences, shown with pytest -s
    assert "batch_size=3" in report["batch_error"] and "2 devices" in report["batch_error"]
    # A chunked env batch: each device steps its share of every chunk (no collective), with the unsharded results.
    assert report["chunked_collectives"] == [], report["chunked_collectives"]
    assert report["chunked"]["y"]["equal"], report["chunked"]
    # Augmentation: the same successes and executed actions. The object observations are not compared: a batch of 2 on
    # one device and of 1 per device are different XLA programs, and contacts amplify their last-bit float differences
    # (measured: actions 6e-8 apart, object velocities up to 0.15).
    aug = report["augment"]
    assert aug["success"]["equal"] and aug["successes"]["equal"], aug
    assert aug["actions"]["max_abs_diff"] < 1e-4, aug
    # Diffusion: losses and weights within float tolerance (measured: 7e-7 and 1.2e-7).
    diff = report["diffusion"]
    np.testing.assert_allclose(diff["losses"]["two"], diff["losses"]["one"], rtol=1e-5)
    assert diff["params"]["max_abs_diff"] < 1e-5, diff
    # PPO: the same return curve (measured: 1.5e-7 apart). The weights are not compared: Adam moves every weight by about
    # lr per step whatever its gradient's size, so weights whose gradient is near float noise (a reduction order apart)
    # end up a few lr apart (measured: 0.069, lr 5e-3, 8 steps).
    ppo = report["ppo"]
    np.testing.assert_allclose(ppo["returns"]["two"], ppo["returns"]["one"], rtol=1e-5)
    # PPO's gradient steps on identical transitions: the same losses and weights (the minibatches split over the
    # devices, the gradients reduced across them), and the weights did move.
    learn = report["ppo_learn"]
    assert learn["moved"]["one"][0] > 1e-3, learn["moved"]
    np.testing.assert_allclose(learn["policy_loss"]["two"], learn["policy_loss"]["one"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(learn["v_loss"]["two"], learn["v_loss"]["one"], rtol=1e-4)
    assert learn["params"]["max_abs_diff"] < 1e-5, learn["params"]


def test_warp_splits_over_two_devices(report):
    """MuJoCo Warp under a mesh: each device steps its own 4 envs (XLA alone ran all 8 on both), with one device's
    results; each env sees only its own contacts (Warp keeps one contact buffer for the worlds of a call)."""
    if "warp" not in report:
        pytest.skip("mujoco-warp is not installed")
    assert report["warp_worlds_per_call"] == [[8], [4]], report["warp_worlds_per_call"]
    resting = [i not in WARP_RAISED for i in range(8)]
    assert report["warp_touching"] == [resting, resting], report["warp_touching"]
    assert report["warp"]["qpos"]["max_abs_diff"] < 1e-5, report["warp"]["qpos"]  # measured: equal


if __name__ == "__main__":
    main()
