"""Train the state-based diffusion policy on dexfly datasets, with periodic closed-loop evaluation.

    python experiments/train_diffusion.py --datasets outputs/grasp_d1.hdf5 --task grasp --steps 6000

Checkpoints (orbax) go to `<out>/checkpoints`; re-running with the same `--out` resumes from the latest.
Evaluation scenes default to the training episodes' own scenes (object, environment, exact pose), at most
`--eval-scenes` of them. Writes `<out>/loss.png`, `<out>/eval.json`, `<out>/policy.json` (task, dims,
datasets) and ends with `success_rate=<float>` (mean over `--eval-seeds`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import dexfly  # noqa: F401  (XLA flags before jax)
import numpy as np
import tyro
from rich.console import Console
from rich.table import Table

import envs
from dexfly import dataset, evaluation, watchdog
from dexfly.policies.diffusion import DiffusionConfig, DiffusionPolicy, fit, num_parameters
from dexfly.utils import atomic_write_text, plot_curve


@dataclass(frozen=True)
class Args:
    datasets: tuple[Path, ...]
    """Training dataset files (dexfly HDF5)."""
    task: str = "grasp"
    out: Path = Path("runs/diffusion")
    size: str = "default"
    """'default' (CPU-sized U-Net) or 'paper' (256, 512, 1024 widths)."""
    steps: int = 6000
    """Optimizer steps (6000 at batch 256: ~25 min on a 2-core CPU)."""
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    eval_every: int = 0
    """Closed-loop evaluation every N steps (0: only at the end)."""
    eval_scenes: int = 20
    eval_seeds: tuple[int, ...] = (0, 1, 2)
    checkpoint_every: int = 1000
    quat_features: bool = True
    """Feed observation quaternions to the network as sign-invariant rot6d features (sets policy.obs_quat_at)."""
    relative_features: bool = False
    """Also feed end-effector-minus-object positions for every (arm, object) (sets policy.obs_rel_pos)."""
    stall_timeout: float = watchdog.DEFAULT_TIMEOUT_S
    """Seconds without progress after which training stops with an error (0: no watchdog); rerun to resume."""
    policy: DiffusionConfig = field(default_factory=DiffusionConfig)
    """Network and schedule settings (horizons, widths, DDIM steps); --size paper overrides the widths."""


def main(args: Args) -> float:
    if args.task not in envs.TASKS:
        raise SystemExit(f"unknown task {args.task!r}; available: {list(envs.TASKS)}")
    console = Console()
    try:
        episodes = dataset.load_episodes(args.datasets, task=args.task)
    except (OSError, dataset.DatasetError) as e:
        raise SystemExit(str(e)) from None
    train = dataset.policy_training_episodes(episodes)
    config = args.policy if args.size == "default" else DiffusionConfig.paper()
    if args.size not in ("default", "paper"):
        raise SystemExit(f"unknown --size {args.size!r}; use 'default' or 'paper'")
    config = config.replace(total_steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            warmup_steps=min(config.warmup_steps, max(args.steps // 10, 1)))
    first = episodes[0]
    env = envs.make_cached(args.task, envs.episode_objects(first))
    if args.quat_features:
        config = config.replace(obs_quat_at=env.obs_layout.quaternion_slots())
    if args.relative_features:
        config = config.replace(obs_rel_pos=env.obs_layout.relative_position_pairs())
    specs = []
    for e in episodes:
        s = env.scene_from_episode(e)
        if s not in specs:
            specs.append(s)
    specs = specs[: args.eval_scenes]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    obs_dim = train[0]["obs"].shape[-1]
    atomic_write_text(out / "policy.json", json.dumps({
        "task": args.task, "obs_dim": int(obs_dim), "action_dim": int(env.action_dim),
        "datasets": [str(p) for p in args.datasets], "num_episodes": len(episodes), "config": config.to_dict(),
    }, indent=2))
    console.print(f"{args.task}: {len(episodes)} episodes, {sum(len(t['obs']) for t in train)} steps, "
                  f"{len(specs)} evaluation scenes, obs_dim={obs_dim}, action_dim={env.action_dim}")

    history = []

    def on_eval(step, state):
        res = evaluation.evaluate_scenes(args.task, DiffusionPolicy.from_state(state, config), specs, seeds=args.eval_seeds)
        history.append({"step": step, "success_rate": res.success_rate_mean, "std": res.success_rate_std, "per_seed": list(res.per_seed)})
        console.print(f"step {step}: closed-loop success_rate={res.success_rate_mean:.3f} ± {res.success_rate_std:.3f}")

    t0 = time.perf_counter()
    with watchdog.stage(f"train_diffusion {args.task}", timeout_s=args.stall_timeout):
        result = fit(train, config, callback=on_eval, callback_every=args.eval_every,
                     checkpoint_dir=str(out / "checkpoints"), checkpoint_every=args.checkpoint_every)
    seconds = time.perf_counter() - t0
    if not history or history[-1]["step"] != int(result.state.step):
        on_eval(int(result.state.step), result.state)
    losses = np.asarray(result.losses)
    if losses.size:
        plot_curve(out / "loss.png", losses, title=f"diffusion loss ({args.task})", ylabel="noise MSE", log=True)
    atomic_write_text(out / "eval.json", json.dumps(history, indent=2))

    table = Table(title=f"diffusion policy: {args.task}")
    for col in ("params", "steps", "final loss", "train time (s)", "success rate"):
        table.add_column(col)
    final = history[-1]
    table.add_row(f"{num_parameters(result.state.params):,}", str(int(result.state.step)),
                  f"{float(losses[-50:].mean()):.4f}" if losses.size else "-", f"{seconds:.0f}",
                  f"{final['success_rate']:.3f} ± {final['std']:.3f}")
    console.print(table)
    print(f"success_rate={final['success_rate']}")
    return final["success_rate"]


if __name__ == "__main__":
    main(tyro.cli(Args))
