"""Run an exported dexfly policy with numpy and onnxruntime alone (no dexfly, no JAX), as a robot would.

    python experiments/deploy_onnx.py --model exported/ --dataset outputs/grasp_d1.hdf5 --episode 0 --step 40

Reads `export.json` and `base_policy.onnx` from --model (written by experiments/export_policy.py), takes the
observation history that ends at step --step of episode demo_<--episode> from a dexfly HDF5 dataset (read with
h5py: /data/demo_N/obs/obj and obs/prop, concatenated per step; before the episode's start the first observation
repeats, as in training), draws the initial noise with numpy (--seed) and prints the action chunk (raw units, one
row per step, the first for the newest observation). For a residual export it also prints the combined action of
the current step (`residual_step` on the chunk's first action). `--json` prints one JSON object instead;
`--check-imports` exits with status 3 if anything imported jax or dexfly.

This file imports only the standard library, numpy, h5py and onnxruntime on purpose: keep it that way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import onnxruntime as ort

MANIFEST = "export.json"
FORBIDDEN_MODULES = ("jax", "jaxlib", "dexfly", "flax", "envs")


class DeployError(Exception):
    """Bad model folder or dataset; the message names the file."""


def forbidden_imports() -> list[str]:
    """Modules of JAX or dexfly present in this process (there must be none)."""
    return sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN_MODULES)


def load_manifest(model_dir: Path) -> dict:
    path = model_dir / MANIFEST
    if not path.is_file():
        raise DeployError(f"{model_dir}: no {MANIFEST} (run experiments/export_policy.py first)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DeployError(f"{path}: not valid JSON ({e})") from None
    if not str(manifest.get("format", "")).startswith("dexfly.export/"):
        raise DeployError(f"{path}: not a dexfly export manifest (format {manifest.get('format')!r})")
    return manifest


def observation_history(dataset: Path, episode: int, step: int, obs_horizon: int, obs_dim: int, task: str) -> np.ndarray:
    """[1, obs_horizon, obs_dim] float32: the observations of steps step - obs_horizon + 1 .. step (indices below 0 are
    the episode's first observation)."""
    try:
        f = h5py.File(dataset, "r")
    except OSError as e:
        raise DeployError(f"{dataset}: cannot open as HDF5 ({e})") from None
    with f:
        if "data" not in f:
            raise DeployError(f"{dataset}: not a dexfly dataset (no /data group)")
        data_task = f["data"].attrs.get("task")
        data_task = data_task.decode() if isinstance(data_task, bytes) else data_task
        if data_task is not None and data_task != task:
            raise DeployError(f"{dataset}: a {data_task!r} dataset, but the policy is for {task!r}")
        name = f"demo_{episode}"
        if name not in f["data"]:
            demos = sorted(f["data"].keys(), key=lambda n: int(n.rsplit("_", 1)[-1]) if n.rsplit("_", 1)[-1].isdigit() else 0)
            raise DeployError(f"{dataset}: no episode {name} (has {len(demos)}: {', '.join(demos[:5])}{', ...' if len(demos) > 5 else ''})")
        demo = f["data"][name]
        obs = np.concatenate([np.asarray(demo["obs/obj"], np.float32), np.asarray(demo["obs/prop"], np.float32)], axis=-1)
    if not 0 <= step < len(obs):
        raise DeployError(f"{dataset}: {name} has {len(obs)} steps, --step {step} is outside")
    if obs.shape[-1] != obs_dim:
        raise DeployError(f"{dataset}: observations have {obs.shape[-1]} numbers per step, the policy takes {obs_dim}")
    idx = np.maximum(np.arange(step - obs_horizon + 1, step + 1), 0)
    return obs[idx][None]


def session(model_dir: Path, manifest: dict, function: str) -> tuple[ort.InferenceSession, dict]:
    spec = manifest["functions"][function]
    path = model_dir / spec["files"]["onnx"]
    if not path.is_file():
        raise DeployError(f"{path}: missing (named in {model_dir / MANIFEST})")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="an export_policy.py output folder")
    parser.add_argument("--dataset", type=Path, required=True, help="a dexfly HDF5 dataset of the policy's task")
    parser.add_argument("--episode", type=int, default=0, help="episode N (the group /data/demo_N)")
    parser.add_argument("--step", type=int, default=0, help="step whose observation is the newest in the history")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (numpy)")
    parser.add_argument("--half-extents", type=float, nargs="*", default=None,
                        help="objects' half-extents (m, 3 per object) for a policy trained with them")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--check-imports", action="store_true", help="exit 3 if jax or dexfly got imported")
    args = parser.parse_args(argv)

    try:
        manifest = load_manifest(args.model)
        h, obs_dim = manifest["horizons"], manifest["observation"]["dim"]
        history = observation_history(args.dataset, args.episode, args.step, h["obs_horizon"], obs_dim, manifest["task"])
        base, spec = session(args.model, manifest, "base_policy")
        noise_shape = [1 if d == manifest["batch_dimension"] else d for d in spec["inputs"][1]["shape"]]
        noise = np.random.default_rng(args.seed).standard_normal(noise_shape, dtype=np.float32)
        feeds = {spec["inputs"][0]["name"]: history, spec["inputs"][1]["name"]: noise}
        if any(i["name"] == "step" for i in spec["inputs"]):  # a policy that conditions on the episode's phase
            feeds["step"] = np.asarray([args.step], np.float32)
        for i in spec["inputs"]:
            if i["name"] == "object_half_extents":  # a base that sees the objects' sizes
                n_obj = i["shape"][1]
                if args.half_extents is None or len(args.half_extents) != 3 * n_obj:
                    raise DeployError(f"this base policy takes the objects' sizes: pass --half-extents ({3 * n_obj} numbers, m)")
                feeds["object_half_extents"] = np.asarray(args.half_extents, np.float32).reshape(1, n_obj, 3)
        chunk = base.run(None, feeds)[0]
        combined, note = None, None
        if "residual_step" in manifest["functions"]:
            res, rspec = session(args.model, manifest, "residual_step")
            feeds = {"obs": history[:, -1], "base_action": chunk[:, 0]}
            if any(i["name"] == "object_half_extents" for i in rspec["inputs"]):
                n_obj = manifest["observation"]["n_objects"]
                if args.half_extents is None or len(args.half_extents) != 3 * n_obj:
                    note = f"residual_step skipped: it needs --half-extents ({3 * n_obj} numbers, m)"
                else:
                    feeds["object_half_extents"] = np.asarray(args.half_extents, np.float32).reshape(1, n_obj, 3)
            if note is None:
                combined = res.run(None, feeds)[0]
    except DeployError as e:
        print(f"deploy_onnx: {e}", file=sys.stderr)
        return 2

    bad = forbidden_imports()
    if args.json:
        out = {"task": manifest["task"], "kind": manifest["kind"], "episode": args.episode, "step": args.step, "seed": args.seed,
               "chunk": chunk[0].tolist(), "combined_action": None if combined is None else combined[0].tolist(), "note": note,
               "forbidden_imports": bad}
        print(json.dumps(out))
    else:
        np.set_printoptions(precision=4, suppress=True, linewidth=160)
        print(f"{manifest['task']} {manifest['kind']} policy, episode {args.episode}, step {args.step}, noise seed {args.seed}")
        print(f"action chunk [{chunk.shape[1]} steps x {chunk.shape[2]}] (raw units; row 0 is for the newest observation):")
        print(chunk[0])
        if combined is not None:
            print("combined action of this step (residual_step on row 0):")
            print(combined[0])
        if note:
            print(note)
    if args.check_imports:
        if bad:
            print(f"deploy_onnx: forbidden modules were imported: {', '.join(bad)}", file=sys.stderr)
            return 3
        if not args.json:
            print("imports checked: no jax, no dexfly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
