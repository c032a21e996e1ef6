"""Export a trained policy for deployment without dexfly or JAX: serialized StableHLO and ONNX, plus a JSON manifest.

    python experiments/export_policy.py --checkpoint runs/dp_grasp --out exported/
    python experiments/export_policy.py --checkpoint runs/res_grasp --out exported_res/

A train_diffusion.py folder gives `base_policy` (observation history + initial noise -> action chunk); a
train_residual.py folder gives its base's `base_policy` and `residual_step` (observation + base action -> the
combined action of one step). Each as `<name>.stablehlo` and `<name>.onnx`; `export.json` holds the task, the
layouts, horizons, normalisers, DDIM steps, the inputs and outputs, and the source checkpoint and its hash.
Every function is checked against the JAX policy before anything is written. Needs `pip install -e ".[export]"`;
`experiments/deploy_onnx.py` runs the result with numpy and onnxruntime alone (docs/export.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import dexfly  # noqa: F401  (XLA flags before jax)
import tyro

from dexfly.export import ExportConfig, ExportError, export_policy


@dataclass(frozen=True)
class Args:
    checkpoint: Path
    """A train_diffusion.py output folder (or its checkpoints/), or a train_residual.py output folder."""
    out: Path = Path("exported")
    export: Annotated[ExportConfig, tyro.conf.arg(name="")] = field(default_factory=ExportConfig)
    """Lowering platforms, ONNX opset, the export-time parity check (no flag prefix: --platforms, --opset, ...)."""


def main(args: Args) -> Path:
    try:
        manifest = export_policy(args.checkpoint, args.out, args.export)
    except ExportError as e:
        raise SystemExit(f"export_policy: {e}") from None
    print(f"wrote {manifest}")
    return manifest


if __name__ == "__main__":
    main(tyro.cli(Args))
