"""Tests of the augmentation module (dexfly.augment): transforms, segmentation, generator schedule,
constraints, errors, and one small batched MJX run (determinism, recording, round trip)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from dexfly import dataset, geometry
from dexfly.augment import AugmentConfig, GenStatic, augment, generate_open_loop
from dexfly.augment.schedule import executed_action, gen_step, init_carry
from dexfly.augment.constraints import SequentialDep, default_sequential_deps, dependency_arrays, deps_from_order
from dexfly.augment.segment import sample_offsets, segment_bounds, subtask_end_steps
from dexfly.augment.sources import make_plan, prepare_sources, stack_plans
from dexfly.augment.transform import apply_transform, relative_transform, transform_eef_poses
from dexfly.paths import DEMOS_DIR
from envs.base import EnvConfig


def yaw_pose(x, y, z, yaw):
    return np.concatenate([[x, y, z], np.asarray(geometry.quat_from_yaw(yaw))]).astype(np.float32)


@pytest.fixture(scope="module")
def grasp_seed():
    return dataset.read_dataset(DEMOS_DIR / "grasp_seed.hdf5", task="grasp").episodes[0]


@pytest.fixture(scope="module")
def pour_seed():
    return dataset.read_dataset(DEMOS_DIR / "pour_seed.hdf5", task="pour").episodes[0]


# ---------------------------------------------------------------- transform (hand-computed)
def test_transform_hand_computed():
    src_obj = yaw_pose(1.0, 0.0, 0.0, 0.0)
    new_obj = yaw_pose(0.0, 1.0, 0.0, np.pi / 2)
    eef = np.array([1.5, 0.0, 0.2, 1, 0, 0, 0], np.float32)  # 0.5 m in front of the object, 0.2 up
    out = np.asarray(transform_eef_poses(jnp.asarray(new_obj), jnp.asarray(src_obj), jnp.asarray(eef)))
    # object rotated by +90 deg about z: the +x offset becomes +y; the ee orientation rotates the same way
    np.testing.assert_allclose(out[:3], [0.0, 1.5, 0.2], atol=1e-6)
    np.testing.assert_allclose(out[3:], np.asarray(geometry.quat_from_yaw(np.pi / 2)), atol=1e-6)


def test_transform_translation_and_identity():
    src_obj = yaw_pose(0.5, 0.0, 0.02, 0.3)
    eef = np.array([[0.4, 0.1, 0.3, 0.0, 1.0, 0.0, 0.0], [0.6, -0.1, 0.1, 0.5, 0.5, 0.5, 0.5]], np.float32)
    same = np.asarray(transform_eef_poses(jnp.asarray(src_obj), jnp.asarray(src_obj), jnp.asarray(eef)))
    np.testing.assert_allclose(same[:, :3], eef[:, :3], atol=1e-6)
    np.testing.assert_allclose(np.abs(np.sum(same[:, 3:] * eef[:, 3:], -1)), 1.0, atol=1e-6)  # same rotation (up to sign)
    moved = yaw_pose(0.6, -0.05, 0.05, 0.3)  # pure translation by (0.1, -0.05, 0.03)
    out = np.asarray(apply_transform(relative_transform(jnp.asarray(moved), jnp.asarray(src_obj)), jnp.asarray(eef)))
    np.testing.assert_allclose(out[:, :3], eef[:, :3] + [0.1, -0.05, 0.03], atol=1e-6)


# ---------------------------------------------------------------- segmentation
def signals(T, ends):
    """[T, n_arms, n_sub] from ends[arm][k]."""
    s = np.zeros((T, len(ends), len(ends[0])), np.uint8)
    for a, e in enumerate(ends):
        for k, t in enumerate(e):
            s[t:, a, k] = 1
    return s


def test_segmentation_edges_and_offsets():
    s = signals(50, [[9, 29, 49], [19, 39, 49]])
    ends = subtask_end_steps(s)
    np.testing.assert_array_equal(ends, [[9, 29, 49], [19, 39, 49]])
    starts, lens = segment_bounds(ends, 50)
    np.testing.assert_array_equal(starts, [[0, 10, 30], [0, 20, 40]])
    np.testing.assert_array_equal(lens, [[10, 20, 20], [20, 20, 10]])
    starts, lens = segment_bounds(ends, 50, np.array([[3, -5, 4], [-2, 2, 0]]))
    np.testing.assert_array_equal(starts, [[0, 13, 25], [0, 18, 42]])
    assert (lens.sum(1) == 50).all()  # the last subtask always runs to the end of the source
    # clipping: offsets can never make a segment empty or reorder the boundaries
    starts, lens = segment_bounds(np.array([[2, 4, 49]]), 50, np.array([[-10, -10, 0]]))
    assert (lens >= 1).all() and (np.diff(starts) > 0).all()
    rng = np.random.default_rng(0)
    off = sample_offsets(rng, 2, 3, 5, shared=False)
    assert off.shape == (2, 3) and np.abs(off).max() <= 5
    shared = sample_offsets(rng, 2, 3, 5, shared=True)
    np.testing.assert_array_equal(shared[0], shared[1])


def test_segmentation_errors():
    with pytest.raises(ValueError, match="no subtask signals"):
        subtask_end_steps(np.zeros((10, 1, 0), np.uint8))
    with pytest.raises(ValueError, match="without a 0 -> 1 edge"):
        subtask_end_steps(np.zeros((10, 1, 2), np.uint8))


# ---------------------------------------------------------------- generator without physics
def run_open_loop(static, plan_np, object_poses):
    plan = jax.tree.map(lambda x: x[0], stack_plans([plan_np]))
    a, s = jax.jit(generate_open_loop, static_argnums=0)(static, plan, jnp.asarray(object_poses))
    return np.asarray(a), np.asarray(s)


def test_round_trip_grasp_open_loop(grasp_seed):
    """Augmenting a demo into its own scene (same object pose, zero offsets, no noise) reproduces its actions
    after the bridge."""
    env = envs.make("grasp")
    src = prepare_sources([grasp_seed], env)
    nb, T = 10, grasp_seed.num_samples
    plan = make_plan(src, env, AugmentConfig(), 0, np.zeros((1, 1), int), jax.random.PRNGKey(0), env.home_action())
    obj = np.concatenate([np.repeat(grasp_seed.object_poses[:1], nb, 0), grasp_seed.object_poses])[:T]
    actions, sig = run_open_loop(GenStatic(bridge_steps=nb), plan, obj)
    np.testing.assert_allclose(actions[nb:], grasp_seed.actions[: T - nb], atol=1e-5)
    np.testing.assert_allclose(actions[0], env.home_action(), atol=1e-4)  # bridge starts at the current (home) target


def test_dart_perturbation_executes_a_drift_and_records_the_plan(grasp_seed):
    """With dart_noise, the recorded actions are exactly those without it, and the executed ones differ only in
    the end-effector positions, by a slowly varying offset of about dart_noise (metres)."""
    env = envs.make("grasp")
    src = prepare_sources([grasp_seed], env)
    plan_np = make_plan(src, env, AugmentConfig(), 0, np.zeros((1, 1), int), jax.random.PRNGKey(0), env.home_action())
    plan = jax.tree.map(lambda x: x[0], stack_plans([plan_np]))
    obj = jnp.asarray(grasp_seed.object_poses)

    @functools.partial(jax.jit, static_argnums=0)
    def run(static):
        def body(c, x):
            c, a, _ = gen_step(static, plan, c, x[0], x[1])
            return c, (a, executed_action(a, c))
        return jax.lax.scan(body, init_carry(plan), (obj, jnp.arange(obj.shape[0])))[1]

    recorded0, executed0 = map(np.asarray, run(GenStatic()))
    recorded, executed = map(np.asarray, run(GenStatic(dart_noise=0.01, dart_steps=20.0)))
    np.testing.assert_array_equal(recorded, recorded0)
    np.testing.assert_array_equal(executed0, recorded0)
    moved = np.abs(executed - recorded).max(0) > 1e-4
    np.testing.assert_array_equal(moved, np.arange(15) < 3)  # positions only
    drift = (executed - recorded)[60:, :3]  # past the process's start from zero
    assert 0.004 < drift.std() < 0.02, drift.std()
    lag1 = np.mean([np.corrcoef(drift[1:, i], drift[:-1, i])[0, 1] for i in range(3)])
    assert lag1 > 0.8, lag1  # a drift, not white noise (exp(-1/20) = 0.95)


def test_round_trip_two_subtasks_open_loop(pour_seed):
    """Two subtasks (grasp the cup, pour into the bowl; signals rebuilt at the hand-close step): each segment is
    reproduced after its own bridge."""
    env = envs.make("pour")
    T, edge, nb = pour_seed.num_samples, 144, 5
    ep = dataclasses.replace(pour_seed, subtask_end=signals(T, [[edge, T - 1]]))
    src = prepare_sources([ep], env)
    plan = make_plan(src, env, AugmentConfig(), 0, np.zeros((1, 2), int), jax.random.PRNGKey(0), env.home_action())
    # object poses seen by the generator: the source's, delayed by the bridges already executed
    src_t = np.concatenate([np.zeros(nb, int), np.arange(edge + 1), np.full(nb, edge + 1), np.arange(edge + 1, T)])[:T]
    actions, sig = run_open_loop(GenStatic(bridge_steps=nb), plan, pour_seed.object_poses[src_t])
    np.testing.assert_allclose(actions[nb : nb + edge + 1], pour_seed.actions[: edge + 1], atol=1e-5)
    g1 = nb + edge + 1 + nb
    np.testing.assert_allclose(actions[g1:], pour_seed.actions[edge + 1 : edge + 1 + T - g1], atol=1e-5)
    assert sig[:, 0, 0].argmax() == nb + edge  # the generated subtask-end signal marks the executed segment's end


def synthetic_plan(lens, *, ref_idx, has_ref, dep=None, constraint="none", T=60, counts=None):
    """A 2-arm plan over synthetic source arrays: ee x position = source step index (+ 10 for arm 1)."""
    lens = np.asarray(lens)
    n_arms, n_sub = lens.shape
    counts = np.full(n_arms, n_sub) if counts is None else np.asarray(counts)
    starts = np.concatenate([np.zeros((n_arms, 1), int), np.cumsum(lens, 1)[:, :-1]], 1)
    ee = np.zeros((T, n_arms, 7), np.float32)
    ee[:, :, 3] = 1.0
    ee[:, :, 0] = np.arange(T)[:, None] * 0.01 + np.arange(n_arms)[None] * 0.1
    subtasks = [[(f"s{k}", None) for k in range(counts[a])] for a in range(n_arms)]
    dep_arm, dep_sub = dependency_arrays(constraint, subtasks, dep or ())
    plan = dict(
        src_ee=ee, src_hand=np.zeros((T, n_arms, 6), np.float32), seg_start=starts.astype(np.int32), seg_len=lens.astype(np.int32),
        src_ref_pose=np.tile(np.array([0, 0, 0, 1, 0, 0, 0], np.float32), (n_arms, n_sub, 1)),
        ref_idx=np.asarray(ref_idx, np.int32), has_ref=np.asarray(has_ref, bool), dep_arm=dep_arm, dep_sub=dep_sub,
        init_pose=ee[0].copy(), init_hand=np.zeros((n_arms, 6), np.float32), n_sub=counts.astype(np.int32),
        key=np.asarray(jax.random.PRNGKey(0)),
    )
    return plan


def first_on(sig, a, k):
    return int(np.argmax(sig[:, a, k] > 0))


def test_coordination_constraint():
    nb, T = 3, 60
    kw = dict(lens=[[10, 20], [15, 15]], ref_idx=[[0, 0], [1, 1]], has_ref=[[True, True], [True, True]])
    obj = np.tile(np.array([[0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0]], np.float32), (T, 1, 1))
    obj[:, 0, 0] = 0.5  # object 0 moved by +0.5 m in x, object 1 not
    _, free = run_open_loop(GenStatic(nb, 0.0, "none"), synthetic_plan(**kw), obj)
    assert [first_on(free, 0, 0), first_on(free, 0, 1)] == [nb + 10 - 1, 2 * nb + 30 - 1]
    actions, sig = run_open_loop(GenStatic(nb, 0.0, "coordination"), synthetic_plan(**kw, constraint="coordination"), obj)
    # subtask 1 of both arms starts together, after the slower arm's subtask 0 (ends at step nb + 15 - 1)
    assert first_on(sig, 0, 0) == nb + 10 - 1 and first_on(sig, 1, 0) == nb + 15 - 1
    start1 = nb + 15
    assert first_on(sig, 0, 1) == start1 + nb + 20 - 1 and first_on(sig, 1, 1) == start1 + nb + 15 - 1
    # the faster arm holds its last target while it waits
    a0 = actions.reshape(T, 2, 15)
    np.testing.assert_allclose(a0[nb + 10 : start1, 0], np.repeat(a0[nb + 9 : nb + 10, 0], start1 - nb - 10, 0))
    # both arms use the same object transform (arm 0's reference, object 0 moved by +0.5 m)
    np.testing.assert_allclose(a0[nb + 5, 1, 0], 0.1 + 0.01 * 5 + 0.5, atol=1e-5)


def test_sequential_constraint():
    nb, T = 2, 60
    dep = (SequentialDep(0, 1, 1, 1),)  # arm 0's subtask 1 waits until arm 1's subtask 1 has ended
    plan = synthetic_plan([[5, 5], [10, 10]], ref_idx=[[0, 0], [0, 0]], has_ref=[[False] * 2] * 2, dep=dep, constraint="sequential")
    actions, sig = run_open_loop(GenStatic(nb, 0.0, "sequential"), plan, np.tile(np.array([0, 0, 0, 1, 0, 0, 0], np.float32), (T, 1, 1)))
    end_dep = first_on(sig, 1, 1)
    assert end_dep == nb + 10 + nb + 10 - 1
    assert first_on(sig, 0, 0) == nb + 5 - 1
    assert first_on(sig, 0, 1) == end_dep + 1 + nb + 5 - 1  # starts the step after the other arm's subtask ended
    a = actions.reshape(T, 2, 15)
    np.testing.assert_allclose(a[nb + 5 : end_dep + 1, 0], np.repeat(a[nb + 4 : nb + 5, 0], end_dep + 1 - nb - 5, 0))
    # default dependencies come from the subtask names (handover: receive waits for handover)
    subtasks = ((("reach", None), ("receive", "object")), (("grasp", "object"), ("handover", "object")))
    assert default_sequential_deps(subtasks) == (SequentialDep(0, 1, 1, 1),)
    with pytest.raises(ValueError, match="cannot derive"):
        default_sequential_deps(((("a", None),), (("b", None),)))


def test_per_arm_subtask_counts():
    """Arms with different subtask counts: arm 0 has 1 subtask, arm 1 has 3 (arm 0's extra columns are padding)."""
    T, nb = 60, 2
    s = signals(T, [[59, 0, 0], [9, 19, 59]])
    s[:, 0, 1:] = 0  # padding columns carry no signal at all
    with pytest.raises(ValueError, match="without a 0 -> 1 edge"):
        subtask_end_steps(s)
    ends = subtask_end_steps(s, [1, 3])
    np.testing.assert_array_equal(ends, [[59, -1, -1], [9, 19, 59]])
    starts, lens = segment_bounds(ends, T, np.array([[4, 4, 4], [0, 0, 0]]), counts=[1, 3])
    assert starts[0, 0] == 0 and lens[0, 0] == T  # arm 0's only subtask runs to the end; padding never runs
    plan = synthetic_plan([[30, 1, 1], [10, 10, 10]], ref_idx=[[0] * 3] * 2, has_ref=[[False] * 3] * 2, counts=[1, 3])
    actions, sig = run_open_loop(GenStatic(nb, 0.0, "none"), plan, np.tile(np.array([0, 0, 0, 1, 0, 0, 0], np.float32), (T, 1, 1)))
    assert first_on(sig, 0, 0) == nb + 30 - 1 and not sig[:, 0, 1:].any()  # arm 0 finishes, padding never ends
    assert [first_on(sig, 1, k) for k in range(3)] == [nb + 9, 2 * nb + 19, 3 * nb + 29]
    a = actions.reshape(T, 2, 15)
    np.testing.assert_allclose(a[nb + 30 :, 0], np.repeat(a[nb + 29 : nb + 30, 0], T - nb - 30, 0))  # then holds


def test_env_sequential_order_and_cycles():
    from envs.handover import Handover

    deps = deps_from_order(Handover.sequential_order)
    assert deps == (SequentialDep(0, 1, 1, 1), SequentialDep(1, 2, 0, 1))
    dep_arm, dep_sub = dependency_arrays("sequential", Handover.subtasks, (), Handover.sequential_order)
    np.testing.assert_array_equal(dep_arm, [[-1, 1, -1], [-1, -1, 0]])
    np.testing.assert_array_equal(dep_sub, [[-1, 1, -1], [-1, -1, 1]])
    # explicit AugmentConfig.sequential wins over the env's order; no order and no telling names: error
    dep_arm, _ = dependency_arrays("sequential", Handover.subtasks, ((0, 2, 1, 0),), Handover.sequential_order)
    assert (dep_arm >= 0).sum() == 1 and dep_arm[0, 2] == 1
    with pytest.raises(ValueError, match="cannot derive"):
        dependency_arrays("sequential", Handover.subtasks, ())
    # a cycle (left 1 after right 1, right 1 after left 1) can never be satisfied
    with pytest.raises(ValueError, match="cycle"):
        dependency_arrays("sequential", Handover.subtasks, ((0, 1, 1, 1), (1, 1, 0, 1)))
    with pytest.raises(ValueError, match="does not have"):
        dependency_arrays("sequential", Handover.subtasks, ((0, 3, 1, 1),))


@pytest.fixture(scope="module")
def handover_env_seed():
    return envs.make("handover"), dataset.read_dataset(DEMOS_DIR / "handover_seed.hdf5", task="handover").episodes[0]


def test_dual_arm_seeds_segment(handover_env_seed):
    """The recorded dual-arm seeds are accepted as they are (per-arm counts from env.subtasks)."""
    env, ep = handover_env_seed
    src = prepare_sources([ep], env)
    np.testing.assert_array_equal(src.ends[0], [[269, 379, 499], [159, 269, 499]])
    lift = envs.make("lift")
    lift_ep = dataset.read_dataset(DEMOS_DIR / "lift_seed.hdf5", task="lift").episodes[0]
    lsrc = prepare_sources([lift_ep], lift)
    assert lsrc.ends.shape == (1, 2, 1)
    plan = make_plan(lsrc, lift, AugmentConfig(), 0, np.zeros((2, 1), int), jax.random.PRNGKey(0), lift.home_action())
    assert (plan["dep_arm"] < 0).all() and plan["n_sub"].tolist() == [1, 1]
    np.testing.assert_array_equal(plan["seg_len"], [[300], [300]])


def test_handover_schedule_order(handover_env_seed):
    """Handover from env.sequential_order: left `receive` starts after right `present` has ended, right `release`
    after left `receive` has ended; the waiting arm holds. Release replays its source only from the step after
    the left's source receive end (the source's own wait is not replayed twice)."""
    env, ep = handover_env_seed
    src = prepare_sources([ep], env)
    (l_wait, l_receive, _), (r_grasp, r_present, r_release) = src.ends[0]  # source subtask ends per arm
    nb, T = 10, ep.num_samples + 60
    plan = make_plan(src, env, AugmentConfig(), 0, np.zeros((2, 3), int), jax.random.PRNGKey(0), env.home_action())
    # release replays the source from the step after the left's source receive end
    assert plan["seg_start"][1, 2] == l_receive + 1 and plan["seg_len"][1, 2] == r_release - l_receive
    obj = np.repeat(ep.object_poses[:1], T, 0)
    actions, sig = run_open_loop(GenStatic(nb, 0.0, "sequential"), plan, obj)
    L, R = 0, 1
    present_end, receive_end, release_end = first_on(sig, R, 1), first_on(sig, L, 1), first_on(sig, R, 2)
    assert first_on(sig, R, 0) == nb + r_grasp and present_end == first_on(sig, R, 0) + nb + (r_present - r_grasp)
    assert first_on(sig, L, 0) == nb + l_wait < present_end  # left's wait ends before the right has presented
    assert receive_end == present_end + nb + (l_receive - l_wait)  # receive starts the step after present ended
    assert release_end == receive_end + nb + (r_release - l_receive)  # release starts the step after receive ended
    a = actions.reshape(T, 2, 15)
    for arm, frm, to in ((L, first_on(sig, L, 0) + 1, present_end + 1), (R, present_end + 1, receive_end + 1)):
        np.testing.assert_allclose(a[frm:to, arm], np.repeat(a[frm - 1 : frm, arm], to - frm, 0))  # holds while waiting
    with pytest.raises(AssertionError):  # the hold ends with the wait: the bridge moves the arm
        np.testing.assert_allclose(a[receive_end + nb + 15, R], a[receive_end, R])


# ---------------------------------------------------------------- errors
def test_errors(grasp_seed, pour_seed):
    no_signals = dataclasses.replace(grasp_seed, subtask_end=np.zeros((grasp_seed.num_samples, 1, 0), np.uint8))
    with pytest.raises(ValueError, match="no subtask signals"):
        augment([no_signals], "grasp", num_wanted=1, progress=False)
    no_edge = dataclasses.replace(grasp_seed, subtask_end=np.zeros((grasp_seed.num_samples, 1, 1), np.uint8))
    with pytest.raises(ValueError, match="without a 0 -> 1 edge"):
        augment([no_edge], "grasp", num_wanted=1, progress=False)
    with pytest.raises(ValueError, match="is not a 'grasp' demo"):
        augment([pour_seed], "grasp", num_wanted=1, progress=False)
    with pytest.raises(ValueError, match="unknown environment"):
        augment([grasp_seed], "grasp", AugmentConfig(env_ids=("no_such_env",)), num_wanted=1, progress=False)
    with pytest.raises(ValueError, match="unknown grasp pose"):
        augment([grasp_seed], "grasp", AugmentConfig(pose_ids=("p999",)), num_wanted=1, progress=False)
    with pytest.raises(ValueError, match="unknown object"):
        augment([grasp_seed], "grasp", AugmentConfig(objects=(("object", ("no_such_obj",)),)), num_wanted=1, progress=False)
    with pytest.raises(ValueError, match="role"):
        augment([grasp_seed], "grasp", AugmentConfig(objects=(("bogus", ("box_tea",)),)), num_wanted=1, progress=False)


# ---------------------------------------------------------------- one small batched MJX run (shared, run once)
SMALL_CAUG = AugmentConfig(pose_ids=("p00", "p03"), env_ids=("studio",), keep_failed=True, bridge_steps=5, env=EnvConfig(episode_seconds=1.0))
SMALL_KW = dict(num_wanted=2, batch_size=2, max_attempts=2, seed=3, progress=False)


@pytest.fixture(scope="module")
def small_run(grasp_seed):
    """The module's only physics run: 2 attempts x 50 steps of Grasp in one small compiled executor."""
    return augment([grasp_seed], "grasp", SMALL_CAUG, **SMALL_KW)


def test_batched_run_recording_round_trip(grasp_seed, small_run, tmp_path):
    eps, stats = small_run
    assert stats.attempts == 2 and len(eps) == 2  # 1 s is too short to lift: kept as failures
    T = 50
    for ep, pose in zip(eps, ("p00", "p03")):
        assert ep.source == "augment" and ep.pose_id == pose and ep.env_id == "studio" and ep.object_ids == ("box_cube_5cm",)
        assert ep.num_samples == T and ep.subtask_end.shape == (T, 1, 1) and ep.subtask_end[-1].all() and not ep.success
        assert ep.obs["obj"].shape == (T, 13) and ep.states.shape[0] == T
    # the seed's own scene: after the 5-step bridge the generated actions are the source's
    np.testing.assert_allclose(eps[0].actions[5:], grasp_seed.actions[: T - 5], atol=1e-4)
    # another pose: the ee targets follow the object (p03 is shifted, and its yaw rotates the targets too)
    assert np.linalg.norm(eps[1].actions[20, :2] - grasp_seed.actions[15, :2]) > 0.05
    out = dataset.write_dataset(tmp_path / "aug.hdf5", eps, task="grasp", env_args=None)
    back = dataset.read_dataset(out, task="grasp")
    assert len(back) == 2 and back.episodes[1].pose_id == "p03"


def test_determinism_without_rerun(grasp_seed, small_run):
    """Everything random about attempt i is seeded by (seed, i): a fresh setup rebuilds the same plans, scenes and
    metadata (the executed actions are a pure function of them, checked above against the source), independent
    of batching. No second physics run."""
    from dexfly.augment.generate import plan_attempt, setup

    eps, _ = small_run
    ctx = setup([grasp_seed], "grasp", SMALL_CAUG, SMALL_KW["seed"])
    env = ctx.cache.get(ctx.topos[0], ctx.configs[0].object_ids)
    for i, ep in enumerate(eps):
        spec, plan, meta = plan_attempt(ctx, env, i)
        spec2, plan2, meta2 = plan_attempt(ctx, env, i)
        assert spec == spec2 and meta == meta2
        for k in plan:
            np.testing.assert_array_equal(plan[k], plan2[k])
        assert spec.pose_id == ep.pose_id and ep.seed == SMALL_KW["seed"] * 1_000_003 + i
        assert int(ep.extra["attempt"]) == i and int(ep.extra["source_index"]) == meta["source_index"]


def test_batch_shape_shrinks_to_the_attempts_left():
    """A budget of few attempts runs in a quarter or half of the batch, not a full batch of padding."""
    from types import SimpleNamespace

    from dexfly.augment.generate import batch_shape

    assert [batch_shape(40, n) for n in (1, 8, 10, 11, 16, 20, 21, 40, 500)] == [10, 10, 10, 20, 20, 20, 40, 40, 40]
    two = SimpleNamespace(devices=np.zeros(2))  # only its device count is read
    assert [batch_shape(12, n, two) for n in (1, 3, 4, 6, 7)] == [4, 4, 4, 6, 12]
    assert batch_shape(2, 1, two) == 2 and batch_shape(1, 1) == 1


def test_a_small_attempt_budget_is_padded_to_a_small_batch(grasp_seed, monkeypatch):
    """augment hands the executor batch_shape's batch (no physics: the executor is stopped at its call)."""
    import dexfly.augment.generate as gen

    seen = []

    def stop(env, static, scenes, keys, plans, mesh):
        seen.append(keys.shape[0])
        raise InterruptedError

    monkeypatch.setattr(gen, "execute", stop)
    with pytest.raises(InterruptedError):
        augment([grasp_seed], "grasp", SMALL_CAUG, num_wanted=1, batch_size=8, max_attempts=2, seed=3, progress=False)
    assert seen == [2]


def test_grid_prefix_spreads_over_environments_and_poses(grasp_seed):
    """Grid mode takes C_aug's configurations in order and a run wanting fewer demos than configurations stops in
    the first pass: any 8 consecutive configurations of 8 environments x 10 poses hold all 8 environments, the first
    20 hold 10 poses, and the whole list is every (environment, pose) pair once."""
    from dexfly.augment.scenes import scene_configs
    from dexfly.catalog import load_catalog

    env_ids = tuple(e.id for e in load_catalog().environments[:8])
    pose_ids = tuple(f"p{k:02d}" for k in range(10))
    caug = AugmentConfig(env_ids=env_ids, pose_ids=pose_ids)
    specs = scene_configs(caug, envs.make("grasp"), grasp_seed, seed=0)
    pairs = [(s.env_id, s.pose_id) for s in specs]
    assert sorted(pairs) == sorted((e, p) for e in env_ids for p in pose_ids)
    assert all(len({e for e, _ in pairs[k:k + 8]}) == 8 for k in range(len(pairs) - 7))
    assert len({p for _, p in pairs[:20]}) == 10


def test_sampled_poses_give_every_attempt_a_pose_of_its_own(grasp_seed):
    """A schedule iteration with `sampled_poses` (flywheel and replay A_EP): the attempts of a call, from grid entry 0
    or a later `grid_start` (the flywheel's per-object calls), each take a distinct pose inside the task's ranges, and
    two calls' seeds draw different poses."""
    from dexfly.augment.scenes import attempt_config, scene_configs
    from dexfly.catalog import load_catalog
    from dexfly.flywheel.schedule import IterationSpec

    env_ids = tuple(e.id for e in load_catalog().environments[:12])
    it = IterationSpec(objects=("box_cube_5cm",), env_ids=env_ids, num_poses=15, trajectories=40, sampled_poses=True)
    assert it.augment_poses("grasp", 48) == {"pose_ids": (), "num_sampled_poses": 48, "grid_start": 0}
    ranges = load_catalog().poses_for("grasp").ranges["object"]

    def poses(seed, start):
        caug = AugmentConfig(env_ids=env_ids, **it.augment_poses("grasp", 48, grid_start=start))
        specs = scene_configs(caug, envs.make("grasp"), grasp_seed, seed=seed)
        picked = [specs[attempt_config(caug, len(specs), t, seed=seed)] for t in range(48)]
        return [dict(s.poses)["object"] for s in picked]

    first = poses(0, 0)
    assert len(set(first)) == 48, "every attempt at a pose of its own"
    assert all(lo <= v <= hi for x, y, yaw in first for v, (lo, hi) in zip((x, y, yaw), (ranges.x, ranges.y, ranges.yaw)))
    assert len(set(poses(0, 13))) == 48
    assert not set(first) & set(poses(1, 0)), "another call's seed draws other poses"
    listed = dataclasses.replace(it, sampled_poses=False)
    assert listed.augment_poses("grasp", 48, grid_start=13) == {"pose_ids": tuple(f"p{k:02d}" for k in range(15)), "grid_start": 13}


def test_grid_start_spreads_separate_calls(grasp_seed):
    """The flywheel augments each object's rollouts in its own call, a few demos each: started at entry 0, every
    call takes the same first environments and poses; with `grid_start` at the end of the previous call's share,
    ten calls of 8 attempts cover all 12 environments and all 15 poses of C_aug."""
    from dexfly.augment.scenes import attempt_config, scene_configs
    from dexfly.catalog import load_catalog

    env_ids = tuple(e.id for e in load_catalog().environments[:12])
    pose_ids = tuple(f"p{k:02d}" for k in range(15))
    caug = AugmentConfig(env_ids=env_ids, pose_ids=pose_ids)
    specs = scene_configs(caug, envs.make("grasp"), grasp_seed, seed=0)

    def taken(starts):
        picked = [specs[attempt_config(dataclasses.replace(caug, grid_start=s), len(specs), t, seed=0)] for s in starts for t in range(8)]
        return {s.env_id for s in picked}, {s.pose_id for s in picked}

    same_start = taken([0] * 10)
    assert len(same_start[0]) == 8 and len(same_start[1]) == 8
    assert taken([8 * k for k in range(10)]) == (set(env_ids), set(pose_ids))
    assert attempt_config(dataclasses.replace(caug, grid_start=len(specs) - 1), len(specs), 1, seed=0) == 0  # cycles


def test_source_smoothing_reduces_jitter_and_keeps_ends(grasp_seed):
    """`source_smoothing` averages a source's targets over a centred window: on the seed with added jitter (as a
    policy rollout has) the per-step change falls, the start and the final target stay, quaternions stay unit and
    a q / -q sign flip mid-trajectory is not averaged into a wrong rotation; an even window is refused."""
    from dexfly.augment.sources import prepare_sources, smooth_targets

    rng = np.random.default_rng(0)
    ee = np.array(grasp_seed.ee_target_pose, np.float32)
    hand = np.array(grasp_seed.hand_target, np.float32)
    jittery_ee = ee.copy()
    jittery_ee[..., :3] += rng.normal(0, 0.003, ee[..., :3].shape).astype(np.float32)
    jittery_hand = hand + rng.normal(0, 0.02, hand.shape).astype(np.float32)
    jittery_ee[100:, :, 3:] *= -1  # the same rotations, other sign
    s_ee, s_hand = smooth_targets(jittery_ee, jittery_hand, 5)
    step = lambda x: np.abs(np.diff(x, axis=0)).mean()  # noqa: E731
    assert step(s_ee[..., :3]) < 0.6 * step(jittery_ee[..., :3]) and step(s_hand) < 0.6 * step(jittery_hand)
    np.testing.assert_allclose(np.linalg.norm(s_ee[..., 3:], axis=-1), 1.0, atol=1e-5)
    dots = np.abs(np.sum(s_ee[..., 3:] * ee[..., 3:], axis=-1))  # |<q_smooth, q_true>| = cos(angle / 2)
    assert dots.min() > 0.999
    clean_ee, _ = smooth_targets(ee, hand, 5)  # the seed starts and ends at rest: its first and last targets stay
    np.testing.assert_allclose(clean_ee[[0, -1], :, :3], ee[[0, -1], :, :3], atol=1e-3)
    assert s_ee.shape == ee.shape and s_hand.shape == hand.shape
    same_ee, same_hand = smooth_targets(ee, hand, 0)
    assert same_ee is ee and same_hand is hand
    with pytest.raises(ValueError, match="odd"):
        smooth_targets(ee, hand, 4)
    env = envs.make("grasp")
    src = prepare_sources([grasp_seed], env, smoothing=5)
    assert step(src.hand[0, : len(hand)]) <= step(hand) + 1e-9
