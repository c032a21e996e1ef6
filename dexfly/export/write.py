"""Write a policy folder's functions as serialized StableHLO and ONNX, with a JSON manifest.

    manifest = export_policy("runs/dp_grasp", "exported/")

Files under `out` (each written atomically, readable by others):
    <function>.stablehlo   `jax.export` serialization (symbolic batch); load with `jax.export.deserialize`
    <function>.onnx        ONNX (opset 18, batch as dim_param "batch"), from dexfly's own converter
    export.json            task, layouts, horizons, normalisers, DDIM steps, every function's inputs and outputs and
                           files, the source checkpoint's path and content hash, and the parity measured at export
Functions: `base_policy` always, `residual_step` for a residual folder, and `residual_correction` and `residual_combine`
when the residual holds its corrections over several steps (see `dexfly.export.functions`).

Before anything is written, every function runs three ways on a random batch (JAX, the deserialized StableHLO,
onnxruntime); a difference above `ExportConfig.tolerance` refuses the export.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dexfly.export.functions import BATCH, ExportError, LoadedPolicy, PolicyFunction, load_policy_folder
from dexfly.utils import atomic_path, atomic_write_text

FORMAT = "dexfly.export/1"
MANIFEST = "export.json"


@dataclass(frozen=True)
class ExportConfig:
    platforms: tuple[str, ...] = ("cpu", "cuda")
    """StableHLO lowering platforms (one serialized module serves all of them)."""
    opset: int = 18
    """ONNX opset (18 or newer: Reduce* take their axes as inputs)."""
    verify_batch: int = 3
    """Batch size of the export-time parity check (0: skip it)."""
    tolerance: float = 1e-4
    """Largest absolute difference from the JAX function that the StableHLO and ONNX outputs may have."""
    seed: int = 0
    """Seed of the parity check's random inputs."""

    def __post_init__(self) -> None:
        if self.opset < 18:
            raise ValueError(f"opset must be 18 or newer (the converter passes Reduce* axes as inputs), got {self.opset}")
        if not self.platforms:
            raise ValueError("platforms must name at least one StableHLO lowering platform (e.g. cpu, cuda)")


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ExportError(f"ONNX export needs the export extra: pip install -e \".[export]\" ({e})") from None


def stablehlo_bytes(f: PolicyFunction, platforms: tuple[str, ...]) -> bytes:
    """`jax.export` of `f` with a symbolic batch dimension, serialized."""
    exported = jax.export.export(jax.jit(f.fn), platforms=platforms)(*f.in_specs())
    return bytes(exported.serialize())


def onnx_bytes(f: PolicyFunction, opset: int) -> bytes:
    from dexfly.export.onnx_convert import to_onnx

    model = to_onnx(f.fn, f.in_specs(), [s.name for s in f.inputs], [f.output.name], graph_name=f.name, opset=opset, doc=f.doc)
    return model.SerializeToString()


def example_inputs(f: PolicyFunction, batch: int, seed: int = 0) -> list[np.ndarray]:
    """Random float32 inputs of `f` (standard normal; half-extents uniform in [2, 10] cm)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in f.inputs:
        shape = tuple(batch if d == BATCH else d for d in s.shape)
        x = rng.uniform(0.02, 0.1, shape) if s.name == "object_half_extents" else rng.standard_normal(shape)
        out.append(x.astype(np.float32))
    return out


def run_onnx(model: bytes | str | Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The model's one output on `inputs` (onnxruntime, CPU)."""
    import onnxruntime as ort

    src = model if isinstance(model, bytes) else str(model)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)[0]


def verify(f: PolicyFunction, hlo: bytes, onnx_model: bytes, batch: int, seed: int = 0) -> dict[str, float]:
    """Max abs differences of the deserialized StableHLO and of onnxruntime from the JAX function on random inputs."""
    xs = example_inputs(f, batch, seed)
    ref = np.asarray(jax.jit(f.fn)(*xs))
    got_hlo = np.asarray(jax.export.deserialize(bytearray(hlo)).call(*xs))
    got_onnx = run_onnx(onnx_model, {s.name: x for s, x in zip(f.inputs, xs)})
    return {"batch": batch, "stablehlo_max_abs_diff": float(np.max(np.abs(got_hlo - ref))),
            "onnx_max_abs_diff": float(np.max(np.abs(got_onnx - ref)))}


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def export_loaded(loaded: LoadedPolicy, out: str | Path, config: ExportConfig = ExportConfig(),
                  log: Callable[[str], Any] = print) -> Path:
    """Export an already loaded policy into `out`; returns the manifest path."""
    _require_onnx()
    import onnx

    out = Path(out)
    artifacts, functions = {}, {}
    for f in loaded.functions:
        t0 = time.perf_counter()
        hlo = stablehlo_bytes(f, config.platforms)
        model = onnx_bytes(f, config.opset)
        check = verify(f, hlo, model, config.verify_batch, config.seed) if config.verify_batch > 0 else None
        if check and max(check["stablehlo_max_abs_diff"], check["onnx_max_abs_diff"]) > config.tolerance:
            raise ExportError(f"{loaded.folder}: exported {f.name} differs from the JAX policy by more than {config.tolerance}: {check}")
        artifacts[f"{f.name}.stablehlo"], artifacts[f"{f.name}.onnx"] = hlo, model
        functions[f.name] = {
            "doc": f.doc, "inputs": [s.to_dict() for s in f.inputs], "outputs": [f.output.to_dict()],
            "files": {"stablehlo": f"{f.name}.stablehlo", "onnx": f"{f.name}.onnx"},
            "verification": check,
        }
        log(f"{f.name}: {len(hlo):,} bytes StableHLO, {len(model):,} bytes ONNX, {time.perf_counter() - t0:.1f} s"
            + (f"; max abs diff vs JAX: StableHLO {check['stablehlo_max_abs_diff']:.2e}, ONNX {check['onnx_max_abs_diff']:.2e}" if check else ""))
    manifest = {
        "format": FORMAT, **loaded.description, "functions": functions,
        "batch_dimension": BATCH,
        "stablehlo": {"platforms": list(config.platforms), "jax_version": jax.__version__,
                      "load": "jax.export.deserialize(bytearray(open(file, 'rb').read())).call(*inputs)"},
        "onnx": {"opset": config.opset, "onnx_version": onnx.__version__, "converter": "dexfly.export.onnx_convert"},
    }
    for name, data in artifacts.items():
        _write_bytes(out / name, data)
    # the manifest last: a reader that finds it finds every file it names
    return atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def export_policy(checkpoint: str | Path, out: str | Path, config: ExportConfig = ExportConfig(),
                  log: Callable[[str], Any] = print) -> Path:
    """Load a base or residual policy folder and export it into `out`; returns the manifest path.
    ExportError (naming the folder) for a folder that is not a policy or whose checkpoint cannot be read."""
    return export_loaded(load_policy_folder(checkpoint), out, config, log)


def read_manifest(out: str | Path) -> dict[str, Any]:
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise ExportError(f"{out}: no {MANIFEST} (not an export_policy.py output folder)")
    return json.loads(path.read_text())


__all__ = ["ExportConfig", "FORMAT", "MANIFEST", "example_inputs", "export_loaded", "export_policy", "onnx_bytes", "read_manifest",
           "run_onnx", "stablehlo_bytes", "verify"]
