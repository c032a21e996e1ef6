"""Finished residual runs side by side, from their files: which settings differ, base and combined success per
object, and per seed each run's gain over its base and its difference from the first run.

    cmp = compare([load_eval("runs/a/iter1/residual"), load_eval("runs/b/iter1/residual")])

Runs compare only when they were evaluated on the same scenes (task, objects, environment, poses, seeds); they are
*paired* when they also share the base checkpoint (same content hash), so that per seed the base's episodes are the
same ones and a difference between the combined policies is the residuals' alone. Runs on different bases (another
machine, another training seed) still compare, as unpaired: their gains over their own bases are the fair figure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dexfly.policies.residual.checkpoint import EVAL_FILE, read_run
from dexfly.utils import read_json

# What makes two evaluations score the same scenes (eval.json keys).
SCENE_KEYS = ("task", "objects", "eval_env_id", "eval_pose_ids", "seeds")
# The training length actually run, from eval.json (a run resumed with a larger total_steps trained longer than the
# total its residual.json was created with), compared beside the settings.
TRAINED = "env_steps trained"


@dataclass(frozen=True)
class ResidualEval:
    """One finished residual run: its folder, settings (residual.json's config), base hash and eval.json."""

    path: Path
    config: dict[str, Any]
    base_sha256: str
    result: dict[str, Any]

    def rates(self, which: str) -> dict[str, Any]:
        """`which` in ("base", "combined"): {mean, std, per_seed, per_object, ...} as eval.json holds it."""
        return self.result[f"{which}_success"]


def resolve(path: str | os.PathLike, iteration: int = 1) -> Path:
    """The residual folder of `path`: `path` itself when it holds eval.json (a train_residual.py output, or a flywheel
    run's iter<i>/residual), else a flywheel run folder's `iter<iteration>/residual`."""
    path = Path(path)
    for candidate in (path, path / f"iter{iteration}" / "residual"):
        if (candidate / EVAL_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"{path}: no {EVAL_FILE} here or in iter{iteration}/residual (not a finished residual run: "
                            "train_residual.py's --out, or a flywheel run past its iter<i>/residual stage)")


def load_eval(path: str | os.PathLike, iteration: int = 1) -> ResidualEval:
    """A finished residual run (see `resolve`); ValueError naming the file when residual.json or eval.json is not one."""
    folder = resolve(path, iteration)
    meta = read_run(folder)
    result = read_json(folder / EVAL_FILE)
    missing = [k for k in (*SCENE_KEYS, "base_success", "combined_success") if not isinstance(result, dict) or k not in result]
    if missing:
        raise ValueError(f"{folder / EVAL_FILE}: not a residual evaluation (missing {missing})")
    for which in ("base_success", "combined_success"):
        rates = result[which]
        if not isinstance(rates, dict) or len(rates.get("per_seed", ())) != len(result["seeds"]) or "per_object" not in rates:
            raise ValueError(f"{folder / EVAL_FILE}: {which} lacks one rate per seed ({len(result['seeds'])}) or per_object")
    return ResidualEval(folder, dict(meta["config"]), str(meta["base"]["sha256"]), result)


@dataclass(frozen=True)
class Comparison:
    """What `compare` computes. Runs in the order given; the first is the reference of every difference."""

    runs: tuple[ResidualEval, ...]
    paired: bool  # every run on the same base checkpoint
    settings: dict[str, list[Any]]  # residual settings (and TRAINED) that differ between the runs: {name: [value per run]}
    per_object: dict[str, dict[str, list[float]]]  # {object: {"base": [per run], "combined": [per run]}}
    gain: list[np.ndarray]  # per run, [seeds] combined - base
    vs_first: list[np.ndarray]  # per run, [seeds] combined - the first run's combined

    @staticmethod
    def summary(x: np.ndarray) -> str:
        """'+0.052 ± 0.048' (mean and std over the seeds)."""
        return f"{x.mean():+.3f} ± {x.std():.3f}"


def compare(runs: list[ResidualEval] | tuple[ResidualEval, ...]) -> Comparison:
    """Compare runs evaluated on the same scenes; ValueError naming what differs otherwise."""
    runs = tuple(runs)
    if len(runs) < 2:
        raise ValueError(f"compare needs at least two runs, got {len(runs)}")
    first = runs[0]
    for run in runs[1:]:
        bad = [f"{k}: {first.result[k]!r} in {first.path}, {run.result[k]!r} in {run.path}" for k in SCENE_KEYS if run.result[k] != first.result[k]]
        if bad:
            raise ValueError("the runs were not evaluated on the same scenes:\n  " + "\n  ".join(bad))
    configs = [{**r.config, TRAINED: r.result.get("env_steps")} for r in runs]
    names = sorted(set().union(*configs))
    settings = {k: [c.get(k) for c in configs] for k in names if any(c.get(k) != configs[0].get(k) for c in configs)}
    per_object = {o: {w: [float(r.rates(w)["per_object"].get(o, np.nan)) for r in runs] for w in ("base", "combined")} for o in first.result["objects"]}
    seeds = lambda r, w: np.asarray(r.rates(w)["per_seed"], np.float64)  # noqa: E731
    return Comparison(runs, len({r.base_sha256 for r in runs}) == 1, settings, per_object,
                      [seeds(r, "combined") - seeds(r, "base") for r in runs],
                      [seeds(r, "combined") - seeds(first, "combined") for r in runs])


__all__ = ["TRAINED", "Comparison", "ResidualEval", "compare", "load_eval", "resolve"]
