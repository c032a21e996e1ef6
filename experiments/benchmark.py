"""Every stage of the loop on the devices present, with compile time apart from steady-state time, and sequential
C MuJoCo on the same model in the same run. Prints a table and writes JSON (device, versions, date, command line,
per-stage numbers) to --out.

    python experiments/benchmark.py --task grasp --batch-sizes 8 --repeats 1 --stages env sample --out /tmp/bench.json
    python experiments/benchmark.py --task grasp --batch-sizes 64 256 1024 4096 --impls jax warp --out runs/bench_gpu.json

Stages (--stages):
  env       batched MJX steps/s for each --impls (physics: `mjx.step` with the controls held; control: the full
            env step, IK + substeps), and C `mj_step` / the C twin's control step, one env, one thread
  augment   A_EP from the task's seed: attempts/s and successful demos/s (batch = attempts per batch), and the
            same generator one attempt at a time in C MuJoCo (--c-attempts)
  train     diffusion training samples/s (batch = training batch size)
  sample    diffusion DDIM sampling, action chunks/s (batch = observation histories per call)
  ppo       one residual PPO update on an untrained base of the task's sizes, env steps/s (batch = envs)
  flywheel  (not in the default set) a whole flywheel of --flywheel-preset in a temporary folder, wall time per stage

Each batch size of --batch-sizes is measured for every stage until one fails (e.g. out of memory), so a sweep
shows where each stage stops scaling. The batch sizes must be multiples of the device count (--devices).
With the persistent compilation cache on (the default, see README "Machines"), a second run's compile times are
cache loads: set DEXFLY_JAX_CACHE_DIR=off to measure compilation itself.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import dexfly  # noqa: F401  (XLA flags before jax)
import jax
import tyro
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import envs
from dexfly import bench
from dexfly.devices import DeviceConfig
from dexfly.utils import atomic_write_text

Stage = Literal["env", "augment", "train", "sample", "ppo", "flywheel"]
SIM_STAGES = ("env", "augment", "ppo")  # the stages measured once per MJX impl


@dataclass(frozen=True)
class Args:
    task: str = "grasp"
    stages: tuple[Stage, ...] = ("env", "augment", "train", "sample", "ppo")
    """Stages to measure (add flywheel for a whole tiny flywheel)."""
    batch_sizes: tuple[int, ...] = (64, 256, 1024)
    """Batch sizes to sweep (every stage; on a GPU try 64 256 1024 4096 8192)."""
    repeats: int = 3
    """Timed steady-state calls per measurement (after the compiling one); the fastest is reported."""
    impls: tuple[str, ...] = ("jax", "warp")
    """MJX implementations for the env, augment and ppo stages; warp is skipped when mujoco_warp does not import."""
    steps: int = 20
    """Control steps per timed env scan (physics scans run steps x n_substeps)."""
    train_steps: int = 10
    """Diffusion optimizer steps per timed scan."""
    widths: tuple[int, ...] = ()
    """Diffusion U-Net down_dims (default: DiffusionConfig's)."""
    augment_batches: int = 1
    """Batches per augment measurement (attempts = batch x this)."""
    num_poses: int = 15
    num_env_ids: int = 3
    """C_aug of the augment stage: the first N catalog poses and environments."""
    c_seconds: float = 2.0
    """Wall time for each sequential C MuJoCo measurement of the env stage."""
    c_attempts: int = 2
    """Augment attempts executed one at a time in C MuJoCo (0: none)."""
    flywheel_preset: str = "tiny"
    flywheel_iterations: int = 2
    out: Path = Path("outputs/benchmark.json")
    """JSON file written at the end (and after every stage)."""
    parallel: Annotated[DeviceConfig, tyro.conf.arg(name="")] = field(default_factory=DeviceConfig)
    """Devices that batches are split over (no flag prefix: --devices, --coordinator-address, ...)."""


def _versions() -> dict:
    out = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "mujoco", "mujoco-mjx", "mujoco-warp", "warp-lang"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _warp_error() -> str | None:
    try:
        import mujoco_warp  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"{type(exc).__name__}: {exc}"
    return None


class Recorder:
    """Rows of results, the rich table, and the JSON file (rewritten after every stage so a crash keeps them)."""

    def __init__(self, args: Args, console: Console, meta: dict):
        self.args, self.console, self.meta = args, console, meta
        self.rows: list[dict] = []
        self.notes: list[str] = []

    def add(self, stage: str, impl: str, batch: int | str, throughput: float, unit: str, *, compile_s: float | None = None,
            run_s: float | None = None, path: str = "", vs_c: float | None = None, detail: dict | None = None) -> None:
        row = {"stage": stage, "impl": impl, "batch": batch, "path": path, "compile_s": compile_s, "run_s": run_s,
               "throughput": throughput, "unit": unit, "vs_c": vs_c, "detail": detail or {}}
        self.rows.append(row)
        extra = f", compile {compile_s:.1f} s" if compile_s is not None else ""
        self.console.print(f"  {stage} [{impl}] batch {batch}: {throughput:,.1f} {unit}{extra}" + (f" ({path})" if path else ""), markup=False)

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.console.print(f"[yellow]{escape(text)}")

    def write(self) -> None:
        doc = {**self.meta, "results": self.rows, "notes": self.notes}
        atomic_write_text(self.args.out, json.dumps(doc, indent=2, default=str))  # rewritten after every stage: never half a file

    def table(self) -> Table:
        dev = self.meta["device"]
        table = Table(title=f"dexfly benchmark: {self.args.task}, {dev['local_devices']} x {dev['device_kind']} ({dev['platform']})")
        for col in ("stage", "impl", "batch", "batching / notes", "compile (s)", "steady (s/call)", "throughput", "unit", "x C"):
            table.add_column(col, justify="right" if col not in ("stage", "impl", "batching / notes", "unit") else "left")
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        for r in self.rows:
            table.add_row(r["stage"], r["impl"], str(r["batch"]), r["path"] or "-", fmt(r["compile_s"], ".1f"), fmt(r["run_s"], ".3f"),
                          f"{r['throughput']:,.1f}", r["unit"], fmt(r["vs_c"], ".2f"))
        return table


def _sweep(rec: Recorder, label: str, batch_sizes, fn) -> None:
    """fn(batch) for every batch size, stopping at the first failure (recorded as a note)."""
    for b in batch_sizes:
        try:
            fn(b)
        except Exception as exc:  # out of memory, a batch that does not split over the devices, ...
            rec.note(f"{label} batch {b}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); larger batches skipped")
            return
        finally:
            rec.write()


def stage_env(rec: Recorder, args: Args, impls, mesh) -> None:
    env0 = envs.make_cached(args.task)
    c = bench.c_mujoco_throughput(env0, args.c_seconds)
    rec.add("env physics", "C mj_step", 1, c["physics_sps"], "steps/s", path="1 thread")
    rec.add("env control", "C CpuEnv", 1, c["control_sps"], "steps/s", path="1 thread")
    for impl in impls:
        env = envs.make_cached(args.task, config=envs.EnvConfig(impl=impl))

        def one(b, env=env, impl=impl):
            r = bench.env_throughput(env, b, args.steps, args.repeats, mesh)
            rec.add("env physics", impl, b, r["physics_sps"], "steps/s", compile_s=r["physics"]["compile_s"], run_s=r["physics"]["run_s"],
                    path=r["path"], vs_c=r["physics_sps"] / c["physics_sps"])
            rec.add("env control", impl, b, r["control_sps"], "steps/s", compile_s=r["control"]["compile_s"], run_s=r["control"]["run_s"],
                    path=r["path"], vs_c=r["control_sps"] / c["control_sps"])

        _sweep(rec, f"env [{impl}]", args.batch_sizes, one)


def stage_augment(rec: Recorder, args: Args, impls, mesh) -> None:
    caug = dict(num_poses=args.num_poses, num_env_ids=args.num_env_ids)
    c = None
    if args.c_attempts > 0:
        stride = max(1, max(args.batch_sizes) * args.augment_batches // args.c_attempts)
        c = bench.augment_c_mujoco(args.task, args.c_attempts, stride=stride, **caug)
        rec.add("augment", "C MuJoCo", 1, c["attempts_per_s"], "attempts/s", compile_s=c["compile_s"], run_s=c["run_s"], path="1 at a time",
                detail=c)
    for impl in impls:
        env = envs.make_cached(args.task, config=envs.EnvConfig(impl=impl))

        def one(b, impl=impl, env=env):
            path = bench.batching_path(env, b // rec.meta["mesh_devices"])
            r = bench.augment_throughput(args.task, b, args.augment_batches, env_config=envs.EnvConfig(impl=impl), mesh=mesh, **caug)
            vs_c = r["attempts_per_s"] / c["attempts_per_s"] if c and c["attempts_per_s"] > 0 else None
            rec.add("augment", impl, b, r["attempts_per_s"], "attempts/s", compile_s=r["compile_s"], run_s=r["run_s"] / max(r["batches"], 1),
                    path=path, vs_c=vs_c, detail=r)
            rec.add("augment demos", impl, b, r["demos_per_s"], "demos/s", path=f"success {r['successes']}/{r['attempts']}", detail=r)

        _sweep(rec, f"augment [{impl}]", args.batch_sizes, one)


def _diffusion_config(args: Args):
    from dexfly.policies.diffusion.config import DiffusionConfig

    base = DiffusionConfig(down_dims=tuple(args.widths)) if args.widths else DiffusionConfig()
    return bench.task_diffusion_config(envs.make_cached(args.task), base)


def stage_train(rec: Recorder, args: Args, mesh) -> None:
    config, obs_dim, action_dim = _diffusion_config(args)

    def one(b):
        r = bench.diffusion_train_throughput(config.replace(batch_size=b), obs_dim, action_dim, args.train_steps, args.repeats, mesh)
        rec.add("diffusion train", "-", b, r["samples_per_s"], "samples/s", compile_s=r["compile_s"], run_s=r["run_s"] / args.train_steps,
                path=f"{r['params']:,} params", detail=r)

    _sweep(rec, "diffusion train", args.batch_sizes, one)


def stage_sample(rec: Recorder, args: Args, mesh) -> None:
    config, obs_dim, action_dim = _diffusion_config(args)

    def one(b):
        r = bench.diffusion_sample_throughput(config, obs_dim, action_dim, b, args.repeats, mesh)
        rec.add("diffusion sample", "-", b, r["chunks_per_s"], "chunks/s", compile_s=r["compile_s"], run_s=r["run_s"],
                path=f"DDIM {r['ddim_steps']} steps", detail=r)

    _sweep(rec, "diffusion sample", args.batch_sizes, one)


def stage_ppo(rec: Recorder, args: Args, impls, mesh) -> None:
    config, obs_dim, action_dim = _diffusion_config(args)
    base = bench.random_diffusion_policy(config, obs_dim, action_dim)
    for impl in impls:
        env = envs.make_cached(args.task, config=envs.EnvConfig(impl=impl))

        def one(b, env=env, impl=impl):
            r = bench.residual_throughput(env, base, b, parts=("update",), repeats=args.repeats, mesh=mesh)
            u = r["parts"]["update"]
            rec.add("residual PPO update", impl, b, r["env_steps_per_s"], "env steps/s", compile_s=u["compile_s"], run_s=u["run_s"], path=r["path"],
                    detail=r)

        _sweep(rec, f"ppo [{impl}]", args.batch_sizes, one)


def stage_flywheel(rec: Recorder, args: Args, mesh) -> None:
    from dexfly.flywheel.loop import Flywheel

    out = Path(tempfile.mkdtemp(prefix=f"dexfly_bench_flywheel_{args.task}_"))
    try:
        t0 = time.perf_counter()
        fw = Flywheel(args.task, args.flywheel_preset, out, iterations=args.flywheel_iterations, seed=0, log=lambda *a, **k: None,
                      progress=False, video=False, mesh=mesh)
        fw.run()
        wall = time.perf_counter() - t0
        stages = {}
        for f in sorted((out / "stages").glob("*.json")):
            stages[f.stem.replace("__", "/")] = json.loads(f.read_text()).get("seconds")
        rec.add("flywheel", args.flywheel_preset, f"{args.flywheel_iterations} it", wall, "s (wall)", detail={"stages_s": stages})
        for name, sec in stages.items():
            if sec is not None:
                rec.add(f"  {name}", args.flywheel_preset, "-", sec, "s")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(args: Args) -> dict:
    console = Console() if sys.stdout.isatty() else Console(width=160)  # a log file gets the whole table
    if args.task not in envs.TASKS:
        raise SystemExit(f"unknown task {args.task!r}; available: {list(envs.TASKS)}")
    mesh = args.parallel.mesh()
    info = bench.device_info()
    meta = {"device": info, "versions": _versions(), "jax_version": jax.__version__,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
            "host": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
                     "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None},
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "compilation_cache": os.environ.get("JAX_COMPILATION_CACHE_DIR", "off"),
            "mesh_devices": 1 if mesh is None else int(mesh.devices.size), "args": dataclasses.asdict(args)}
    rec = Recorder(args, console, meta)
    console.print(f"device: {info['local_devices']} x {info['device_kind']} ({info['platform']}), jax {jax.__version__}, "
                  f"sharded over {meta['mesh_devices']} device(s)")

    impls = []
    for impl in args.impls:
        if impl not in ("jax", "warp"):
            raise SystemExit(f"unknown impl {impl!r}: use jax or warp")
        err = _warp_error() if impl == "warp" else None
        if err:
            rec.note(f"impl=warp skipped: mujoco_warp does not import ({err})")
        else:
            impls.append(impl)

    # Which batching path each env takes here: the CPU-only cpu_vmap_chunk workaround must not apply on a GPU.
    env0 = envs.make_cached(args.task)
    per_device = [b // meta["mesh_devices"] for b in args.batch_sizes]
    paths = {b: bench.batching_path(env0, b) for b in per_device}
    meta["batching"] = {"cpu_vmap_chunk": env0.cpu_vmap_chunk, "backend": jax.default_backend(), "per_device_batch_path": paths}
    console.print(f"{args.task}: cpu_vmap_chunk={env0.cpu_vmap_chunk}, backend {jax.default_backend()}: "
                  + ", ".join(f"{b} envs/device -> {p}" for b, p in paths.items()))
    if jax.default_backend() != "cpu" and any(p != "vmap" for p in paths.values()):
        rec.note("WARNING: the CPU chunking workaround applies on a non-CPU backend")

    for stage in args.stages:
        console.rule(stage)
        t0 = time.perf_counter()
        try:
            if stage == "env":
                stage_env(rec, args, impls, mesh)
            elif stage == "augment":
                stage_augment(rec, args, impls, mesh)
            elif stage == "train":
                stage_train(rec, args, mesh)
            elif stage == "sample":
                stage_sample(rec, args, mesh)
            elif stage == "ppo":
                stage_ppo(rec, args, impls, mesh)
            elif stage == "flywheel":
                stage_flywheel(rec, args, mesh)
        except Exception as exc:
            rec.note(f"stage {stage} failed: {type(exc).__name__}: {exc}")
        meta.setdefault("stage_wall_s", {})[stage] = round(time.perf_counter() - t0, 1)
        rec.write()
    console.print(rec.table())
    for n in rec.notes:
        console.print(f"[yellow]{escape(n)}")
    rec.write()
    console.print(f"wrote {args.out}")
    return {**meta, "results": rec.rows, "notes": rec.notes}


if __name__ == "__main__":
    main(tyro.cli(Args))
