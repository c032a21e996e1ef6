"""Policy export for deployment without dexfly or JAX: serialized StableHLO (`jax.export`) and ONNX.

    from dexfly.export import export_policy
    export_policy("runs/dp_grasp", "exported/")          # or a train_residual.py folder

    functions.py     a policy folder as pure JAX functions (noise as an input) and its description
    onnx_convert.py  dexfly's jaxpr -> ONNX converter (why hand-written: its docstring, docs/export.md)
    write.py         the files: <function>.stablehlo, <function>.onnx, export.json

Sits above dexfly.policies (it imports them; nothing below imports it). ONNX needs the `export` extra.
"""

from dexfly.export.functions import (BATCH, ExportError, LoadedPolicy, PolicyFunction, TensorSpec, base_policy_function,
                                     describe_layouts, load_policy_folder, residual_step_function)
from dexfly.export.write import MANIFEST, ExportConfig, export_loaded, export_policy, read_manifest, run_onnx

__all__ = ["BATCH", "ExportConfig", "ExportError", "LoadedPolicy", "MANIFEST", "PolicyFunction", "TensorSpec", "base_policy_function",
           "describe_layouts", "export_loaded", "export_policy", "load_policy_folder", "read_manifest", "residual_step_function", "run_onnx"]
