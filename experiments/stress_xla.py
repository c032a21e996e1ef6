"""Count XLA:CPU hangs per XLA flag setting: run a case that hangs many times per setting, with a timeout.

    python experiments/stress_xla.py --case eval --checkpoint runs/dp_grasp_cube --runs 6
    python experiments/stress_xla.py --case vmap --vmap-task lift --vmap-batch 64 --runs 6

Each run is a fresh process with XLA_FLAGS set explicitly for its setting (so dexfly's own defaults do not
mask it); settings are interleaved (A B A B ...) so that load on the machine hits them alike. A run that
has not finished after `--timeout` seconds is counted as a hang; before it is killed, its native stacks can
be saved with gdb (`--gdb`). A run counts as hung when its process has used no CPU for `--idle` seconds
(the wedge: 0% CPU, every thread parked) or has run past `--timeout`. Results are appended to `--out` (JSON lines), so an interrupted stress run
continues where it stopped; the summary table counts every run in that file for the chosen case.

Cases:
- `eval`: the reproducer of issue 11, closed-loop evaluation of a Grasp diffusion checkpoint on 60
  irregular-object scenes (`experiments/evaluate.py`, 3 seeds, studio, poses p00..p09).
- `vmap`: one jitted scan of `--vmap-steps` env steps over a full-width `vmap` of `--vmap-batch` envs
  (no `cpu_vmap_chunk`), the case that hung for >= 32 bimanual or 256 Panda envs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]

FUSION = "--xla_cpu_use_fusion_emitters=false"  # dexfly's CPU speed flag, in every setting
SETTINGS: dict[str, str] = {
    # jaxlib 0.10.2's own defaults, spelled out so dexfly's defaults cannot change them
    "jax-default": f"{FUSION} --xla_cpu_enable_concurrency_optimized_scheduler=true",
    "no-concurrency-scheduler": f"{FUSION} --xla_cpu_enable_concurrency_optimized_scheduler=false",
    "single-thread-eigen": f"{FUSION} --xla_cpu_enable_concurrency_optimized_scheduler=true --xla_cpu_multi_thread_eigen=false",
    "no-xnnpack": f"{FUSION} --xla_cpu_enable_concurrency_optimized_scheduler=true --xla_cpu_use_xnnpack=false",
}

IRREGULAR = ("irr_hammer_toy", "irr_mallet", "irr_spray_bottle", "irr_dispenser", "irr_tee_block", "irr_post_toy")


@dataclass(frozen=True)
class Args:
    case: Literal["eval", "vmap"] = "eval"
    settings: tuple[str, ...] = ("jax-default", "no-concurrency-scheduler")
    """Names from SETTINGS (see the source)."""
    runs: int = 4
    """Runs per setting (added to those already in --out)."""
    timeout: float = 3600.0
    """Seconds after which a run counts as hung and is killed, whatever it is doing."""
    idle: float = 60.0
    """A run whose process used no CPU time for this many seconds counts as hung (the wedge's signature is
    0% CPU with every thread parked; compiling and running both keep the CPU busy)."""
    checkpoint: Path | None = None
    """`eval` case: a Grasp train_diffusion.py output folder."""
    vmap_task: str = "lift"
    vmap_batch: int = 64
    vmap_steps: int = 300
    gdb: bool = True
    """Save the native stacks of a hung run (needs gdb) next to --out."""
    out: Path = Path("outputs/stress_xla.jsonl")


def _vmap_case(task: str, batch: int, steps: int) -> None:
    """Child process of the `vmap` case: a full-width vmap scan of home actions, timed."""
    import dexfly  # noqa: F401  (sets the cache; XLA_FLAGS comes from the parent)
    import jax
    import jax.numpy as jnp

    import envs

    env = envs.make(task)
    specs = env.sample_scenes(jax.random.PRNGKey(0), batch, envs.SceneSet(sample_poses=True))
    scenes = env.make_scenes(specs)
    action = jnp.asarray(env.home_action())

    @jax.jit
    def run(scenes, key):
        states = jax.vmap(env.reset)(scenes, jax.random.split(key, batch))

        def body(s, t):
            a = action + 0.02 * jnp.sin(0.05 * t)  # small motion so contacts and the solver do some work
            return jax.vmap(env.step, in_axes=(0, None))(s, a), None

        states, _ = jax.lax.scan(body, states, jnp.arange(steps, dtype=jnp.float32))
        return states.data.qpos

    t0 = time.perf_counter()
    jax.block_until_ready(run(scenes, jax.random.PRNGKey(1)))
    print(f"vmap case: {task} batch={batch} steps={steps} done in {time.perf_counter() - t0:.1f} s", flush=True)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads (s), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _command(args: Args) -> list[str]:
    if args.case == "vmap":
        return [sys.executable, __file__, "--vmap-child", args.vmap_task, str(args.vmap_batch), str(args.vmap_steps)]
    if args.checkpoint is None:
        raise SystemExit("--case eval needs --checkpoint (a Grasp train_diffusion.py output folder)")
    return [sys.executable, str(REPO / "experiments" / "evaluate.py"), "--checkpoint", str(args.checkpoint), "--task", "grasp",
            "--env-ids", "studio", "--pose-ids", *[f"p{i:02d}" for i in range(10)], "--seeds", "0", "1", "2",
            "--max-scenes", "80", "--videos", "0", "--out", "outputs/stress_eval", "--objects", *IRREGULAR]


def _run_once(args: Args, setting: str, index: int) -> dict:
    # PYTHONPATH: the children import this checkout's dexfly, not another one installed in editable mode
    env = dict(os.environ, XLA_FLAGS=SETTINGS[setting], PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    t0 = time.perf_counter()
    log = args.out.with_name(f"{args.out.stem}_last_run.log")  # a file, not a pipe: a full pipe would stall the child
    log_f = open(log, "w")
    proc = subprocess.Popen(_command(args), cwd=REPO, env=env, stdout=log_f, stderr=subprocess.STDOUT, text=True)
    hung, reason, idle_since, last_cpu = False, "", time.perf_counter(), -1.0
    while proc.poll() is None:
        time.sleep(2.0)
        cpu = _cpu_seconds(proc.pid)
        now = time.perf_counter()
        if cpu != last_cpu:
            last_cpu, idle_since = cpu, now
        if now - idle_since > args.idle or now - t0 > args.timeout:
            hung, reason = True, "idle" if now - idle_since > args.idle else "timeout"
            break
    if hung:
        if args.gdb and shutil.which("gdb"):
            stacks = subprocess.run(["gdb", "-p", str(proc.pid), "-batch", "-ex", "thread apply all bt 12"],
                                    capture_output=True, text=True, timeout=120).stdout
            path = args.out.with_name(f"{args.out.stem}_{args.case}_{setting}_{index}_stacks.txt")
            path.write_text(stacks)
        proc.kill()
    proc.wait()
    log_f.close()
    out = log.read_text()
    seconds = time.perf_counter() - t0
    if not hung and proc.returncode == 75:  # dexfly's watchdog ended a wedged run first
        hung, reason = True, "watchdog"
    if not hung and proc.returncode != 0:
        raise SystemExit(f"run {index} ({setting}) failed with exit code {proc.returncode}:\n{out[-3000:]}")
    return {"case": args.case, "setting": setting, "xla_flags": SETTINGS[setting], "hung": hung, "reason": reason, "seconds": round(seconds, 1),
            "timeout": args.timeout, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "tail": out.strip().splitlines()[-1:] if out else []}


def main(args: Args) -> None:
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; known: {list(SETTINGS)}")
    console = Console()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for i in range(args.runs):
        for setting in args.settings:
            rec = _run_once(args, setting, i)
            with open(args.out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            console.print(f"[{i + 1}/{args.runs}] {setting}: {'HUNG' if rec['hung'] else 'finished'} after {rec['seconds']} s")
    records = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    table = Table(title=f"XLA:CPU hangs, case {args.case}")
    for col in ("setting", "runs", "hangs", "median s (finished)"):
        table.add_column(col)
    for setting in SETTINGS:
        recs = [r for r in records if r["case"] == args.case and r["setting"] == setting]
        if recs:
            done = sorted(r["seconds"] for r in recs if not r["hung"])
            table.add_row(setting, str(len(recs)), str(sum(r["hung"] for r in recs)), f"{done[len(done) // 2]:.0f}" if done else "-")
    console.print(table)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--vmap-child":
        _vmap_case(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main(tyro.cli(Args))
