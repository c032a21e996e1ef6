"""Policy export (dexfly.export, experiments/export_policy.py, experiments/deploy_onnx.py): the serialized StableHLO and
the ONNX model (onnxruntime) give dexfly's own actions for the same inputs and noise, the manifest describes them,
the deployment script runs without jax or dexfly, and folders that are not policies are refused.

The checkpoints are tiny and untrained (parity does not need a trained network): a grasp-shaped diffusion policy
with quaternion and relative-position features, and a residual on top of it with perturbed weights and statistics
so its correction is far from zero."""

from __future__ import annotations

import dexfly  # noqa: F401  (XLA flags before jax)

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from brax.training.acme import running_statistics  # noqa: E402

from dexfly import dataset, layout  # noqa: E402
from dexfly.export import MANIFEST, ExportConfig, ExportError, export_policy, load_policy_folder  # noqa: E402
from dexfly.export.onnx_convert import UnsupportedPrimitiveError, to_onnx  # noqa: E402
from dexfly.policies.diffusion import DiffusionConfig, Normalizer, init_train_state, load_run, save_checkpoint  # noqa: E402
from dexfly.policies.residual import ResidualConfig, ResidualSpec  # noqa: E402
from dexfly.policies.residual import checkpoint as res_ckpt  # noqa: E402
from dexfly.policies.residual import train as rt  # noqa: E402
from dexfly.unroll import Step  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4
LAYOUT = layout.ObsLayout(n_objects=1, n_arms=1)  # grasp: 40 observation numbers, 15 action numbers
OBS_DIM, ACT_DIM = LAYOUT.dim, layout.ACTION_DIM_PER_ARM
BASE_CFG = DiffusionConfig.tiny(num_inference_steps=3, num_train_timesteps=30, action_horizon=4,
                                obs_quat_at=LAYOUT.quaternion_slots(), obs_rel_pos=LAYOUT.relative_position_pairs())
RES_CFG = ResidualConfig(hidden=(16, 16), value_hidden=(16,), obs_base_action=True, obs_geometry=True, alpha_rot=0.5, alpha_hand=0.3)
SPEC = ResidualSpec(1, 1, ((0.0,) * 6,), ((1.4, 1.4, 1.4, 1.4, 0.6, 1.3),))


def _observations(rng: np.random.Generator, shape) -> np.ndarray:
    """Observation-like vectors: normal numbers, unit quaternions (random signs) at the quaternion slots."""
    obs = rng.normal(size=(*shape, OBS_DIM)).astype(np.float32)
    for i in LAYOUT.quaternion_slots():
        q = rng.normal(size=(*shape, 4))
        obs[..., i:i + 4] = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return obs


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """(base run folder, residual run folder) as train_diffusion.py / train_residual.py lay them out."""
    root = tmp_path_factory.mktemp("export_runs")
    rng = np.random.default_rng(0)
    obs = _observations(rng, (64,))
    obs[:, 10] = 0.25  # a constant dimension (the min-max normaliser's special case)
    norm = Normalizer.fit(layout.obs_features(obs, BASE_CFG.obs_quat_at, BASE_CFG.obs_rel_pos), rng.normal(0.1, 0.2, (64, ACT_DIM)))
    base = root / "base"
    save_checkpoint(base / "checkpoints", init_train_state(BASE_CFG, norm), BASE_CFG)
    (base / "policy.json").write_text(json.dumps({"task": "grasp", "obs_dim": OBS_DIM, "action_dim": ACT_DIM, "config": BASE_CFG.to_dict()}))

    state = rt.init_state(RES_CFG, SPEC)
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 64))
    policy = jax.tree.map(lambda x: x + 0.2 * jax.random.normal(next(keys), x.shape, x.dtype), state.params.policy)
    stats = running_statistics.update(state.normalizer, jnp.asarray(rng.normal(1.0, 2.0, (50, SPEC.feature_dim(RES_CFG))), jnp.float32))
    state = state.replace(params=state.params.replace(policy=policy), normalizer=stats)
    res = root / "residual"
    meta = {"format": res_ckpt.FORMAT, "task": "grasp", "config": RES_CFG.to_dict(), "spec": SPEC.to_dict(),
            "base": res_ckpt.base_identity(base), "objects": ["cube"], "env_ids": ["studio"]}
    res_ckpt.save(res / "checkpoints", state, meta)
    (res / res_ckpt.RUN_FILE).write_text(json.dumps(meta))
    return base, res


@pytest.fixture(scope="session")
def exported(runs, tmp_path_factory):
    """The residual folder exported (base_policy and residual_step), with the export-time parity check on."""
    out = tmp_path_factory.mktemp("exported")
    export_policy(runs[1], out, log=lambda s: None)
    return out


def _onnx(path: Path, **inputs) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)[0]


def _stablehlo(path: Path, *inputs) -> np.ndarray:
    return np.asarray(jax.export.deserialize(bytearray(path.read_bytes())).call(*inputs))


def test_base_policy_stablehlo_and_onnx_match_dexfly_sampler(runs, exported):
    """The chunk from StableHLO and from onnxruntime equals `DiffusionPolicy.sample(history, key)[:, :action_horizon]`
    when the noise is the sampler's own draw for `key`; at batch 4 and, from the same file (the batch is symbolic),
    at batch 1 for ONNX (StableHLO ran at batch 3 in the export's own check)."""
    policy, config, _ = load_run(runs[0])
    batch = 4
    history = _observations(np.random.default_rng(1), (batch, config.obs_horizon))
    key = jax.random.PRNGKey(1)
    noise = np.asarray(jax.random.normal(key, (batch, config.pred_horizon, ACT_DIM), jnp.float32))  # what sample() draws
    want = np.asarray(policy(jnp.asarray(history), key))[:, :config.action_horizon]
    got_hlo = _stablehlo(exported / "base_policy.stablehlo", history, noise)
    got_onnx = _onnx(exported / "base_policy.onnx", obs_history=history, noise=noise)
    got_onnx1 = _onnx(exported / "base_policy.onnx", obs_history=history[2:3], noise=noise[2:3])
    assert want.shape == got_hlo.shape == got_onnx.shape == (batch, config.action_horizon, ACT_DIM) and got_onnx1.shape[0] == 1
    d_hlo, d_onnx, d_onnx1 = (np.abs(got - ref).max() for got, ref in ((got_hlo, want), (got_onnx, want), (got_onnx1, want[2:3])))
    print(f"base_policy: max abs diff StableHLO {d_hlo:.2e}, ONNX {d_onnx:.2e} (batch 4), {d_onnx1:.2e} (batch 1)")
    assert max(d_hlo, d_onnx, d_onnx1) <= TOL
    assert np.std(want) > 1e-3  # a real chunk, not a constant


def test_residual_step_matches_the_evaluation_hook(runs, exported):
    """residual_step (StableHLO, ONNX) equals the combined action that the deterministic residual hook of
    `load_combined` (what evaluation runs) returns in an active env, and really corrects the base action."""
    _, hook, params, _ = res_ckpt.load_combined(runs[1])
    rng = np.random.default_rng(2)
    B = 5
    obs = _observations(rng, (B,))
    base_action = rng.normal(0.0, 0.5, (B, ACT_DIM)).astype(np.float32)
    half = rng.uniform(0.02, 0.08, (B, 1, 3)).astype(np.float32)
    state = SimpleNamespace(obs={"obj": jnp.asarray(obs[:, :13]), "prop": jnp.asarray(obs[:, 13:])},
                            info={"scene": SimpleNamespace(object_half_extents=jnp.asarray(half))})
    step = Step(jnp.int32(0), state, None, jnp.asarray(base_action))
    want = np.asarray(jax.jit(lambda: hook(params, None, step, jax.random.PRNGKey(0))[1])())  # one compile, not op by op
    got_hlo = _stablehlo(exported / "residual_step.stablehlo", obs, base_action, half)
    got_onnx = _onnx(exported / "residual_step.onnx", obs=obs, base_action=base_action, object_half_extents=half)
    d_hlo, d_onnx = np.abs(got_hlo - want).max(), np.abs(got_onnx - want).max()
    print(f"residual_step: max abs diff StableHLO {d_hlo:.2e}, ONNX {d_onnx:.2e}")
    assert d_hlo <= TOL and d_onnx <= TOL
    assert np.abs(want - base_action).max() > 1e-3


def test_manifest_and_files(runs, exported):
    """export.json: task, layouts, horizons, normaliser, DDIM steps, inputs/outputs, files, source paths and hashes;
    ONNX with opset >= 17 and a symbolic batch; every file readable by others."""
    m = json.loads((exported / MANIFEST).read_text())
    policy, config, _ = load_run(runs[0])
    assert m["kind"] == "residual" and m["task"] == "grasp"
    assert m["observation"]["dim"] == OBS_DIM and m["action"]["dim"] == ACT_DIM
    assert [b["name"] for b in m["observation"]["blocks"][:2]] == ["object.pos", "object.quat"]
    assert m["horizons"] == {"obs_horizon": config.obs_horizon, "pred_horizon": config.pred_horizon, "action_horizon": config.action_horizon}
    assert m["diffusion"]["ddim_steps"] == config.num_inference_steps
    np.testing.assert_allclose(m["normalizer"]["action"]["scale"], np.asarray(policy.normalizer.action.scale), rtol=1e-6)
    assert m["residual"]["config"] == RES_CFG.to_dict()
    step = m["base_source"]["step"]
    assert m["base_source"]["sha256"] == res_ckpt.tree_sha256(runs[0] / "checkpoints" / str(step))
    assert m["source"]["sha256"] == res_ckpt.tree_sha256(runs[1] / "checkpoints" / str(m["source"]["step"]))
    assert [i["name"] for i in m["functions"]["base_policy"]["inputs"]] == ["obs_history", "noise"]
    assert m["functions"]["residual_step"]["outputs"][0]["shape"] == ["batch", ACT_DIM]
    for name, f in m["functions"].items():
        assert f["verification"]["onnx_max_abs_diff"] <= TOL, name
        for file in f["files"].values():
            assert (exported / file).stat().st_mode & stat.S_IROTH, file
    import onnx

    model = onnx.load(str(exported / "base_policy.onnx"))
    assert model.opset_import[0].version >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not [p for p in exported.iterdir() if p.name.startswith(".")]  # no temp files left


def _imported_modules(importtime_stderr: str) -> set[str]:
    """Module names from `python -X importtime` output."""
    return {m.group(1).strip() for m in re.finditer(r"^import time:\s*\d+\s*\|\s*\d+\s*\|\s*(.+)$", importtime_stderr, re.M)}


def _jax_or_dexfly(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in ("jax", "jaxlib", "dexfly")}


def test_deploy_onnx_runs_without_jax_or_dexfly(runs, exported, tmp_path):
    """deploy_onnx.py in a fresh interpreter prints the chunk for a recorded history (the same as the JAX policy's for
    that history and numpy noise) and the combined action; neither jax nor dexfly is imported (checked by the script
    and, independently, from `-X importtime`, whose parser is shown to catch an import of dexfly)."""
    T, step, seed = 6, 3, 7
    rng = np.random.default_rng(3)
    obs = _observations(rng, (T,))
    ep = dataset.Episode(actions=np.zeros((T, ACT_DIM)), states=np.zeros((T, 4)), rewards=np.zeros(T),
                         obs={"obj": obs[:, :13], "prop": obs[:, 13:]}, ee_target_pose=np.zeros((T, 1, 7)),
                         hand_target=np.zeros((T, 1, 6)), object_poses=np.zeros((T, 1, 7)), subtask_end=np.zeros((T, 1, 2)),
                         success=True, object_ids=("cube",), env_id="studio", pose_id="p0", seed=0)
    data = dataset.write_dataset(tmp_path / "tiny.hdf5", [ep], task="grasp", env_args={})
    cmd = [sys.executable, "-X", "importtime", str(REPO / "experiments" / "deploy_onnx.py"), "--model", str(exported),
           "--dataset", str(data), "--episode", "0", "--step", str(step), "--seed", str(seed), "--half-extents", "0.03", "0.04", "0.05",
           "--json", "--check-imports"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert _jax_or_dexfly(_imported_modules(proc.stderr)) == set() and out["forbidden_imports"] == []
    assert "onnxruntime" in _imported_modules(proc.stderr)

    # the same numbers as the ONNX models give in this process (which the tests above hold to the JAX policy)
    H, P = BASE_CFG.obs_horizon, BASE_CFG.pred_horizon
    history = obs[np.maximum(np.arange(step - H + 1, step + 1), 0)][None]
    noise = np.random.default_rng(seed).standard_normal((1, P, ACT_DIM), dtype=np.float32)
    want = _onnx(exported / "base_policy.onnx", obs_history=history, noise=noise)
    np.testing.assert_allclose(np.asarray(out["chunk"]), want[0], rtol=0, atol=1e-6)
    half = np.asarray([[[0.03, 0.04, 0.05]]], np.float32)
    want_combined = _onnx(exported / "residual_step.onnx", obs=obs[step][None], base_action=want[:, 0], object_half_extents=half)
    np.testing.assert_allclose(np.asarray(out["combined_action"]), want_combined[0], rtol=0, atol=1e-6)

    # the human-readable form prints the chunk too
    proc = subprocess.run(cmd[:-2], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and "action chunk [4 steps x 15]" in proc.stdout, proc.stderr[-2000:]

    # negative control: the import-time parser does see dexfly when it is imported
    probe = subprocess.run([sys.executable, "-X", "importtime", "-c", "import dexfly"], capture_output=True, text=True, env=env,
                           cwd=REPO, timeout=60)
    assert "dexfly" in _jax_or_dexfly(_imported_modules(probe.stderr))


def test_export_script_on_a_base_folder_and_bad_folders(runs, tmp_path, experiment_script):
    """The CLI exports a base folder (base_policy only); a folder that is not a policy, a missing folder and a
    corrupt checkpoint are refused with messages naming them, and nothing is written."""
    script = experiment_script("export_policy")
    out = tmp_path / "exported"
    manifest = script.main(script.Args(checkpoint=runs[0], out=out, export=ExportConfig(platforms=("cpu",), verify_batch=0)))
    m = json.loads(Path(manifest).read_text())
    assert m["kind"] == "base" and list(m["functions"]) == ["base_policy"]
    assert sorted(p.name for p in out.iterdir()) == ["base_policy.onnx", "base_policy.stablehlo", MANIFEST]

    empty = tmp_path / "not_a_policy"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(SystemExit, match=rf"{re.escape(str(empty))}: not a dexfly policy folder"):
        script.main(script.Args(checkpoint=empty, out=tmp_path / "x"))
    with pytest.raises(ExportError, match="no such folder"):
        load_policy_folder(tmp_path / "missing")

    broken = tmp_path / "broken"
    shutil.copytree(runs[0], broken)
    for f in (broken / "checkpoints").rglob("*"):
        if f.is_file() and "state" in f.parts:
            f.write_bytes(b"\x00garbage")
    with pytest.raises(SystemExit, match=rf"{re.escape(str(broken))}: cannot load the diffusion policy"):
        script.main(script.Args(checkpoint=broken, out=tmp_path / "y"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("phase_steps, geometry", [(300, 0), (0, 1)], ids=["phase", "geometry"])
def test_feature_policy_exports_with_extra_inputs(tmp_path, phase_steps, geometry):
    """A base that conditions on the episode's phase exports with an input `step`, one that sees object geometry with
    `object_half_extents`; StableHLO and ONNX give dexfly's chunk for the same inputs and noise, and the manifest
    records phase_steps and geometry_objects."""
    cfg = BASE_CFG.replace(phase_steps=phase_steps, obs_geometry=geometry)
    rng = np.random.default_rng(5)
    obs = _observations(rng, (64,))
    feats = np.concatenate([layout.obs_features(obs, cfg.obs_quat_at, cfg.obs_rel_pos),
                            rng.uniform(0, 1, (64, int(phase_steps > 0))), rng.uniform(0.02, 0.05, (64, 3 * geometry))], -1)
    base = tmp_path / "feature_base"
    save_checkpoint(base / "checkpoints", init_train_state(cfg, Normalizer.fit(feats, rng.normal(0.1, 0.2, (64, ACT_DIM)))), cfg)
    (base / "policy.json").write_text(json.dumps({"task": "grasp", "obs_dim": OBS_DIM, "action_dim": ACT_DIM, "config": cfg.to_dict()}))
    out = tmp_path / "exported"
    manifest = json.loads(Path(export_policy(base, out, ExportConfig(platforms=("cpu",), verify_batch=0), log=lambda s: None)).read_text())
    fn = manifest["functions"]["base_policy"]
    extra = ["step"] * (phase_steps > 0) + ["object_half_extents"] * (geometry > 0)
    assert [i["name"] for i in fn["inputs"]] == ["obs_history", "noise", *extra]
    assert manifest["observation_features"]["phase_steps"] == phase_steps
    assert manifest["observation_features"]["geometry_objects"] == geometry

    policy, config, _ = load_run(base)
    history = _observations(np.random.default_rng(6), (3, config.obs_horizon))
    key = jax.random.PRNGKey(2)
    noise = np.asarray(jax.random.normal(key, (3, config.pred_horizon, ACT_DIM), jnp.float32))
    inputs = {"step": np.asarray([0, 120, 400], np.float32),
              "object_half_extents": np.asarray([[[0.02, 0.02, 0.02]], [[0.03, 0.025, 0.04]], [[0.05, 0.05, 0.05]]], np.float32)}
    step = jnp.asarray(inputs["step"], jnp.int32) if phase_steps else None
    half = jnp.asarray(inputs["object_half_extents"]) if geometry else None
    want = np.asarray(policy(jnp.asarray(history), key, step, half))[:, :config.action_horizon]
    got_hlo = _stablehlo(out / "base_policy.stablehlo", history, noise, *(inputs[k] for k in extra))
    got_onnx = _onnx(out / "base_policy.onnx", obs_history=history, noise=noise, **{k: inputs[k] for k in extra})
    assert max(np.abs(got_hlo - want).max(), np.abs(got_onnx - want).max()) <= TOL


def test_unsupported_primitive_is_named():
    (b,) = jax.export.symbolic_shape("batch")
    with pytest.raises(UnsupportedPrimitiveError, match="'cumsum'"):
        to_onnx(lambda x: jnp.cumsum(x, axis=1), [jax.ShapeDtypeStruct((b, 4), jnp.float32)], ["x"], ["y"])
