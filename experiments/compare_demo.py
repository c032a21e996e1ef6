"""Roll a policy out in the scenes of dataset demos and show where it leaves them (dexfly.diagnose).

    python experiments/compare_demo.py --checkpoint runs/flywheel_lift_cpu/iter1/diffusion --task lift \
        --dataset runs/flywheel_lift_cpu/d1.hdf5 --episodes 0 1 2 3 4 --out runs/compare_lift

For each chosen episode: did the policy succeed where the demo did, how high did the object rise against the demo,
when did the object paths part, and how far the policy's end-effector targets (in the object's frame) and hand
targets sit from the demo's over time. For a diffusion checkpoint, also the same offsets without the closed loop
(the policy's first action on the demo's own observations, 8 noise draws): small there and large in the rollout
means the rollout drifts off its data; large there means the fit is off. Writes `<out>/compare.json` and
`<out>/compare.png`; prints the tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import dexfly  # noqa: F401  (XLA flags before jax)
import numpy as np
import tyro
from rich.console import Console
from rich.table import Table

import envs
from dexfly import dataset
from dexfly.catalog import TASKS, CatalogError
from dexfly.diagnose import compare_with_demos, open_loop_offsets, plot_comparisons
from dexfly.layout import split_action
from dexfly.policies.diffusion import load_run
from dexfly.policies.residual import checkpoint as residual_checkpoint
from dexfly.utils import atomic_write_text


@dataclass(frozen=True)
class Args:
    checkpoint: Path
    """A train_diffusion.py output folder, or a train_residual.py one (the combined policy)."""
    dataset: Path
    """An HDF5 dataset of the task (e.g. a flywheel run's d1.hdf5): the demos to compare with."""
    task: str = "grasp"
    episodes: tuple[int, ...] = (0, 1, 2, 3, 4)
    """Indices of the dataset's episodes."""
    seed: int = 0
    times: int = 8
    """Steps per episode shown in the table (evenly spaced)."""
    out: Path = Path("outputs/compare")


def main(args: Args) -> list[dict]:
    if args.task not in TASKS:
        raise SystemExit(f"unknown task {args.task!r}; available: {list(TASKS)}")
    hook = params = None
    try:
        if (args.checkpoint / residual_checkpoint.RUN_FILE).exists():
            policy, hook, params, _ = residual_checkpoint.load_combined(args.checkpoint, task=args.task)
        else:
            policy, _, _ = load_run(args.checkpoint, task=args.task)
        data = dataset.read_dataset(args.dataset, task=args.task)
    except (FileNotFoundError, ValueError, dataset.DatasetError) as e:
        raise SystemExit(str(e)) from None
    bad = [i for i in args.episodes if not 0 <= i < len(data.episodes)]
    if bad or not args.episodes:
        raise SystemExit(f"episode indices {bad or '(none)'} not in {args.dataset} ({len(data.episodes)} episodes)")
    try:
        rows = compare_with_demos(args.task, policy, [data.episodes[i] for i in args.episodes], seed=args.seed, hook=hook, hook_params=params)
    except (CatalogError, ValueError) as e:
        raise SystemExit(str(e)) from None

    console = Console()
    if not console.is_terminal:  # a log file: wide enough that a row of the tables below stays on one line
        console = Console(width=160)
    summary = Table(title=f"{args.task}: policy against the demos of {args.dataset.name}")
    for col in ("episode", "scene", "success (demo)", "max rise m (demo)", "paths part at step"):
        summary.add_column(col)
    for r in rows:
        s = r.summary()
        summary.add_row(str(args.episodes[r.index]), r.scene, f"{int(r.success)} ({int(r.demo_success)})",
                        f"{s['max_rise']:.3f} ({s['demo_max_rise']:.3f})", str(r.diverged_at))
    console.print(summary)
    n_arms = rows[0].target_offset_obj.shape[1]
    for r in rows:
        detail = Table(title=f"episode {args.episodes[r.index]}: {r.scene}")
        for col in ("step", "rise m (demo)", *(f"arm {a}: target - demo (mm, object x y z)" for a in range(n_arms)), "hand - demo (rad)"):
            detail.add_column(col, no_wrap=True)
        T = len(r.object_rise)
        for t in np.linspace(0, T - 1, args.times).round().astype(int):
            v = r.at(t)
            detail.add_row(str(t), f"{v['rise']:+.3f} ({v['demo_rise']:+.3f})",
                           *(" ".join(f"{1000 * x:+5.1f}" for x in v["target_offset_obj"][a]) for a in range(n_arms)),
                           " ".join(f"{x:+.3f}" for x in v["hand_offset"]))
        console.print(detail)

    open_loop = None
    if hook is None:  # a diffusion policy alone: the teacher-forced comparison (a residual acts per step on live states)
        open_loop = []
        for i in args.episodes:
            ep = data.episodes[i]
            shown = np.linspace(0, len(ep.actions) - 1, args.times).round().astype(int)
            first = split_action(open_loop_offsets(policy, ep, shown, seed=args.seed)[:, :, 0], n_arms).pos  # [S, draws, arms, 3]
            detail = Table(title=f"episode {i}, open loop (the demo's own observations): first action - demo (mm, world x y z), mean ± std of 8 draws")
            for col in ("step", *(f"arm {a}" for a in range(n_arms))):
                detail.add_column(col, no_wrap=True)
            for k, t in enumerate(shown):
                m, sd = 1000 * first[k].mean(0), 1000 * first[k].std(0)
                detail.add_row(str(t), *(" ".join(f"{m[a, d]:+5.1f}±{sd[a, d]:3.1f}" for d in range(3)) for a in range(n_arms)))
            console.print(detail)
            open_loop.append({"episode": i, "steps": shown.tolist(), "mean_mm": np.round(1000 * first.mean(1), 2).tolist(),
                              "std_mm": np.round(1000 * first.std(1), 2).tolist()})
    args.out.mkdir(parents=True, exist_ok=True)
    env = envs.make_cached(args.task, None, None)
    plot_comparisons(args.out / "compare.png", rows, args.task, env.config.ctrl_dt)
    result = [{**r.summary(), "episode": args.episodes[r.index],
               "steps_shown": [r.at(t) for t in np.linspace(0, len(r.object_rise) - 1, args.times).round().astype(int)]} for r in rows]
    atomic_write_text(args.out / "compare.json", json.dumps({"task": args.task, "checkpoint": str(args.checkpoint),
                                                             "dataset": str(args.dataset), "seed": args.seed, "episodes": result,
                                                             "open_loop": open_loop}, indent=2))
    console.print(f"wrote {args.out / 'compare.json'} and {args.out / 'compare.png'}")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
