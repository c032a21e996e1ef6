"""Robot models: contract names, forward kinematics against the facts sheet, MJX stability.

FK references are independent numpy implementations of the modified-DH tables in /work/shared/robot_facts.md
(Panda: section 1.1; RM75-6F: section 3.1) plus the documented base mounts; they do not read the MJCF.
"""

from __future__ import annotations

import time

import dexfly  # noqa: F401  (XLA flags + compile cache before jax)
import mujoco
import numpy as np
import pytest

from dexfly.paths import ROBOTS_DIR
from envs.robots import BimanualRM75Env, PandaInspireEnv

PANDA = ROBOTS_DIR / PandaInspireEnv.robot_file
BIMANUAL = ROBOTS_DIR / BimanualRM75Env.robot_file
HAND_ACTS = ["pinky", "ring", "middle", "index", "thumb_bend", "thumb_rot"]
TIPS = ["thumb", "index", "middle", "ring", "pinky"]


def _names(m, objtype, n):
    return [mujoco.mj_id2name(m, objtype, i) for i in range(n)]


# ------------------------------------------------------------------------------------------------ (a) contracts
@pytest.fixture(scope="module")
def panda():
    return mujoco.MjModel.from_xml_path(str(PANDA))


@pytest.fixture(scope="module")
def bimanual():
    return mujoco.MjModel.from_xml_path(str(BIMANUAL))


def _check_arm(m, prefix, tip_prefix, hand_prefix, ee, flange):
    joints = _names(m, mujoco.mjtObj.mjOBJ_JOINT, m.njnt)
    arm = [j for j in joints if j.startswith(prefix + "joint")]
    assert arm == [f"{prefix}joint{i}" for i in range(1, 8)]
    assert arm == sorted(arm)
    # base-to-tip: each arm joint's body is a descendant of the previous one
    bodies = [m.jnt_bodyid[m.joint(j).id] for j in arm]
    for parent, child in zip(bodies, bodies[1:]):
        b = child
        while b not in (0, parent):
            b = m.body_parentid[b]
        assert b == parent
    acts = _names(m, mujoco.mjtObj.mjOBJ_ACTUATOR, m.nu)
    mine = [a for a in acts if a.startswith(prefix + "joint") or a.startswith(hand_prefix)]
    assert mine == arm + [hand_prefix + a for a in HAND_ACTS]
    for a in arm:  # actuator drives the joint of the same name; ctrlrange = joint range
        act = m.actuator(a)
        assert m.joint(act.trnid[0]).name == a
        np.testing.assert_allclose(act.ctrlrange, m.joint(a).range)
    for a in HAND_ACTS:
        act = m.actuator(hand_prefix + a)
        np.testing.assert_allclose(act.ctrlrange, m.jnt_range[act.trnid[0]])
        assert act.ctrlrange[0] == 0.0
    sites = set(_names(m, mujoco.mjtObj.mjOBJ_SITE, m.nsite))
    assert {ee, flange} | {f"{tip_prefix}tip_{t}" for t in TIPS} <= sites
    assert len([j for j in joints if j.startswith(hand_prefix)]) == 12  # 6 actuated + 6 coupled


def test_panda_contract(panda):
    m = panda
    _check_arm(m, "panda_", "", "hand_", "ee", "flange")
    assert m.opt.timestep == pytest.approx(0.004)
    assert m.opt.integrator == mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    assert m.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC  # pyramidal: round objects creep out of the hand (build_bimanual.py)
    assert np.allclose(m.body("panda_link0").pos, 0)
    assert m.key("home") is not None
    assert 0.5 <= m.body_subtreemass[m.body("hand_base").id] <= 0.6
    _check_collision_bits(m)


def test_bimanual_contract(bimanual):
    m = bimanual
    for s in ("left", "right"):
        _check_arm(m, f"{s}_", f"{s}_", f"{s}_hand_", f"{s}_ee", f"{s}_flange")
        assert 0.5 <= m.body_subtreemass[m.body(f"{s}_hand_base").id] <= 0.6
    acts = _names(m, mujoco.mjtObj.mjOBJ_ACTUATOR, m.nu)
    assert acts[:14] == [f"{s}_joint{i}" for s in ("left", "right") for i in range(1, 8)]
    assert m.key("home") is not None
    assert m.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL  # elliptic: the Handover seed drops its object (build_bimanual.py)
    _check_collision_bits(m)


def _check_collision_bits(m):
    allowed = {(0, 0), (2, 5), (2, 4)}
    for g in range(m.ngeom):
        bits = (int(m.geom_contype[g]), int(m.geom_conaffinity[g]))
        assert bits in allowed, (m.geom(g).name, bits)
        if bits != (0, 0):
            prim = {int(mujoco.mjtGeom.mjGEOM_CAPSULE), int(mujoco.mjtGeom.mjGEOM_BOX), int(mujoco.mjtGeom.mjGEOM_SPHERE)}
            assert int(m.geom_type[g]) in prim, m.geom(g).name
    # the robot alone produces no contacts at home (hand never touches itself or the arm)
    d = mujoco.MjData(m)
    mujoco.mj_resetDataKeyframe(m, d, m.key("home").id)
    mujoco.mj_forward(m, d)
    assert d.ncon == 0


# ------------------------------------------------------------------------------------------------ (b) FK
def _mdh(alpha, a, theta, d):
    ca, sa, ct, st = np.cos(alpha), np.sin(alpha), np.cos(theta), np.sin(theta)
    return np.array([[ct, -st, 0, a],
                     [st * ca, ct * ca, -sa, -sa * d],
                     [st * sa, ct * sa, ca, ca * d],
                     [0, 0, 0, 1.0]])


def _chain(alphas, As, ds, q, d_flange):
    T = np.eye(4)
    for al, a, d, th in zip(alphas, As, ds, q):
        T = T @ _mdh(al, a, th, d)
    Tf = np.eye(4)
    Tf[2, 3] = d_flange
    return T @ Tf


def panda_fk(q):
    """Facts 1.1 modified-DH (Craig): a_{i-1}, d_i, alpha_{i-1}; flange d = 0.107."""
    a = [0, 0, 0, 0.0825, -0.0825, 0, 0.088]
    d = [0.333, 0, 0.316, 0, 0.384, 0, 0]
    al = [0, -np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2, np.pi / 2]
    return _chain(al, a, d, q, 0.107)


def rm75_fk(q, side):
    """Facts 3.1 MDH (all a = 0; d1 .2405, d3 .256, d5 .21, d7 .1725 = flange) behind the documented mount:
    base at (0.05, +-0.25, 0.20), pitched 30 deg forward about its y axis."""
    al = [0, -np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2]
    d = [0.2405, 0, 0.256, 0, 0.210, 0, 0.1725]
    T = _chain(al, [0] * 7, d, q, 0.0)
    c, s = np.cos(np.deg2rad(30)), np.sin(np.deg2rad(30))
    B = np.array([[c, 0, s, 0.05], [0, 1, 0, 0.25 if side == "left" else -0.25], [-s, 0, c, 0.20], [0, 0, 0, 1]])
    return B @ T


def _configs(m, names, n_random=6, seed=0):
    lo, hi = np.array([m.joint(j).range for j in names]).T
    rng = np.random.default_rng(seed)
    qs = [np.clip(np.zeros(7), lo, hi), (lo + hi) / 2, lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo)]
    qs += [rng.uniform(lo, hi) for _ in range(n_random)]
    return qs


def _fk_errors(m, arm_joints, site, fk):
    d = mujoco.MjData(m)
    sid = m.site(site).id
    adr = [m.joint(j).qposadr[0] for j in arm_joints]
    worst_p = worst_r = 0.0
    for q in _configs(m, arm_joints):
        d.qpos[:] = m.qpos0
        d.qpos[adr] = q
        mujoco.mj_kinematics(m, d)
        T = fk(q)
        worst_p = max(worst_p, np.linalg.norm(d.site_xpos[sid] - T[:3, 3]))
        worst_r = max(worst_r, np.abs(d.site_xmat[sid].reshape(3, 3) - T[:3, :3]).max())
    return worst_p, worst_r


def test_panda_fk(panda):
    ep, er = _fk_errors(panda, [f"panda_joint{i}" for i in range(1, 8)], "flange", panda_fk)
    print(f"panda flange FK: max pos err {ep:.2e} m, max rot err {er:.2e}")
    assert ep < 1e-3 and er < 1e-3


@pytest.mark.parametrize("side", ["left", "right"])
def test_rm75_fk(bimanual, side):
    ep, er = _fk_errors(bimanual, [f"{side}_joint{i}" for i in range(1, 8)], f"{side}_flange",
                        lambda q: rm75_fk(q, side))
    print(f"rm75 {side} flange FK: max pos err {ep:.2e} m, max rot err {er:.2e}")
    assert ep < 1e-3 and er < 1e-3


def test_panda_fk_reference_sanity():
    # facts 3.2: RM75 flange at q=0 is at base (0,0,0.879); with J2=+90 deg at (0.6385, 0, 0.2405)
    c, s = np.cos(np.deg2rad(30)), np.sin(np.deg2rad(30))
    Binv = np.linalg.inv(np.array([[c, 0, s, 0.05], [0, 1, 0, -0.25], [-s, 0, c, 0.2], [0, 0, 0, 1]]))
    np.testing.assert_allclose((Binv @ rm75_fk(np.zeros(7), "right"))[:3, 3], [0, 0, 0.879], atol=1e-9)
    q = np.zeros(7)
    q[1] = np.pi / 2
    np.testing.assert_allclose((Binv @ rm75_fk(q, "right"))[:3, 3], [0.6385, 0, 0.2405], atol=1e-9)


def test_hand_coupling_and_grasp_site(panda):
    """Closing the hand around a 6 cm ball centred at `ee` touches it with the thumb and all four fingers."""
    m0 = panda
    d0 = mujoco.MjData(m0)
    mujoco.mj_resetDataKeyframe(m0, d0, m0.key("home").id)
    mujoco.mj_forward(m0, d0)
    ee = d0.site("ee").xpos
    xml = PANDA.read_text().replace(
        "</worldbody>",
        f'<body mocap="true" pos="{ee[0]} {ee[1]} {ee[2]}"><geom name="ball" size="0.03" contype="4" '
        f'conaffinity="15"/></body></worldbody>')
    m = mujoco.MjModel.from_xml_string(xml)
    d = mujoco.MjData(m)
    mujoco.mj_resetDataKeyframe(m, d, m.key("home").id)
    d.ctrl[7:] = [1.47, 1.47, 1.47, 1.47, 0.6, 1.1]
    for _ in range(500):
        mujoco.mj_step(m, d)
    touching = set()
    for c in d.contact[: d.ncon]:
        for g in (c.geom1, c.geom2):
            touching.add(m.geom(g).name)
    for finger in TIPS:
        assert any(n.startswith(f"hand_{finger}") for n in touching), (finger, touching)
    # equality coupling holds (dex-urdf ratio)
    qi = d.qpos[m.joint("hand_index_intermediate").qposadr[0]]
    qp = d.qpos[m.joint("hand_index_proximal").qposadr[0]]
    assert abs(qi - (-0.04545 + 1.06399 * qp)) < 0.02


# ------------------------------------------------------------------------------------------------ (c) MJX stability
def _mjx_stability(path, n_env=64, n_steps=1000, hold=25, seed=0, chunk=16):
    import jax
    import jax.numpy as jp
    from mujoco import mjx

    m = mujoco.MjModel.from_xml_path(str(path))
    # A robot file alone has no contact pairs (its collision bits only meet objects and the table), so its friction
    # cone acts on nothing here; MJX 4.0's elliptic solver fails to trace without a single frictional contact
    # (it indexes with an empty float array), so the bare robot runs with the pyramidal cone. The task scenes,
    # which always hold the table and objects, keep the model's own cone (tests/test_envs.py replays them).
    m.opt.cone = mujoco.mjtCone.mjCONE_PYRAMIDAL
    mx = mjx.put_model(m, impl="jax")
    d0 = mjx.make_data(m, impl="jax")
    assert d0._impl.contact.dist.shape == (0,)  # no contact can occur: the cone is moot
    d0 = d0.replace(qpos=jp.asarray(m.key_qpos[0], d0.qpos.dtype), ctrl=jp.asarray(m.key_ctrl[0], d0.ctrl.dtype))
    lo, hi = jp.asarray(m.actuator_ctrlrange[:, 0]), jp.asarray(m.actuator_ctrlrange[:, 1])

    def rollout(key):
        # One flat scan over steps (targets resampled every `hold` steps from a pre-drawn table). Each step runs the
        # 64 envs as lax.map over chunks of `chunk` vmapped envs: with a plain 64-wide vmap, XLA:CPU intermittently
        # deadlocks in MJX's solver while loops for the bimanual model (see _run_isolated); 16-wide chunks did not.
        ctrls = jax.random.uniform(key, (n_steps // hold + 1, n_env, m.nu), minval=lo, maxval=hi)
        n_chunk = n_env // chunk
        vstep = jax.vmap(mjx.step, in_axes=(None, 0))

        def body(carry, t):
            d, vmax = carry
            d = d.replace(ctrl=ctrls[t // hold])
            dc = jax.tree_util.tree_map(lambda x: x.reshape((n_chunk, chunk) + x.shape[1:]), d)
            dc = jax.lax.map(lambda x: vstep(mx, x), dc)
            d = jax.tree_util.tree_map(lambda x: x.reshape((n_env,) + x.shape[2:]), dc)
            return (d, jp.maximum(vmax, jp.abs(d.qvel).max())), None

        d = jax.tree_util.tree_map(lambda x: jp.broadcast_to(x, (n_env,) + x.shape), d0)
        (d, vmax), _ = jax.lax.scan(body, (d, jp.zeros(())), jp.arange(n_steps))
        return d.qpos, d.qvel, vmax

    f = jax.jit(rollout)
    t0 = time.perf_counter()
    compiled = f.lower(jax.random.PRNGKey(seed)).compile()
    t1 = time.perf_counter()
    qpos, qvel, vmax = jax.block_until_ready(compiled(jax.random.PRNGKey(seed)))
    t2 = time.perf_counter()
    qpos, qvel, vmax = np.asarray(qpos), np.asarray(qvel), float(vmax)
    print(f"MJX {path.name}: compile {t1 - t0:.1f} s, run {t2 - t1:.1f} s "
          f"({n_env * n_steps / (t2 - t1):.0f} steps/s), max |qvel| {vmax:.2f}")
    assert np.isfinite(qpos).all() and np.isfinite(qvel).all() and np.isfinite(vmax)
    assert vmax < 30.0, vmax  # rated joint speeds are 2-4.5 rad/s
    # final state still satisfies the joint limits of actuated joints (soft limits: small tolerance)
    lim = m.jnt_limited.astype(bool)
    rng = m.jnt_range[lim]
    q = qpos[:, m.jnt_qposadr[lim]]
    assert (q > rng[:, 0] - 0.1).all() and (q < rng[:, 1] + 0.1).all()
    return vmax


def _run_isolated(path, timeout_s=240, attempts=2):
    """Runs the MJX stability rollout in a child process with a wall-clock limit.

    Why: XLA:CPU (jaxlib 0.10.2) intermittently deadlocks executing MJX's constraint-solver while loops inside a
    jitted scan over >= 32 vmapped envs on this 2-core machine (all threads idle in block_until_ready, 0% CPU;
    seen for the bimanual model, gone with constraints disabled). The 16-env chunks above avoided it in our runs;
    this guard stays as a backstop. That is a runtime bug, not a model
    instability, so a hung attempt is retried once and then skipped with a message instead of blocking pytest."""
    import subprocess
    import sys

    for k in range(attempts):
        try:
            out = subprocess.run([sys.executable, __file__, str(path)], capture_output=True, text=True,
                                 timeout=timeout_s)
        except subprocess.TimeoutExpired:
            print(f"{path.name}: attempt {k + 1} hung (XLA:CPU deadlock), retrying" if k + 1 < attempts else "")
            continue
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("MJX ")]
        if lines:
            print(lines[-1])
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return
    pytest.skip(f"{path.name}: MJX rollout hung {attempts}x (XLA:CPU while-loop deadlock), stability not measured")


def test_panda_mjx_stability():
    _run_isolated(PANDA)


def test_bimanual_mjx_stability():
    _run_isolated(BIMANUAL)


if __name__ == "__main__":
    import sys
    from pathlib import Path

    _mjx_stability(Path(sys.argv[1]))
    sys.stdout.flush()
