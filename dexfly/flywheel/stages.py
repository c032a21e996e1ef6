"""A flywheel run folder and its stage records: what makes a long run resumable and its outputs trustworthy.

    run = RunFolder.open("runs/flywheel_grasp", task="grasp", preset="cpu", seed=0)
    record = run.run_stage("iter1/diffusion", config, body)   # body() writes the outputs, returns (outputs, summary)

(`run_stage` is `done`, then `adopt` from donors, then the body and `finish`.)

`flywheel.json` names the run (task, preset, seed, the simulation model's fingerprint `envs.physics_fingerprint`,
and a `variant` when it is not the plain flywheel: an ablation, a baseline); a folder of another task, preset,
seed, model or variant, or a non-empty folder that is not a flywheel run, is refused. Each finished stage leaves
`stages/<name>.json`: its config and the hash of it, its outputs with a SHA-256 of each (files, or every file of a
folder), the time it took over all its attempts (a resumed stage counts the time before it stopped). A rerun
skips a stage whose record matches; a record with another config is an error (unless the user redoes the run
from that stage), and an output whose content no longer matches its hash is refused, naming it.
A stage that another finished run (a donor) holds with the same config hash is copied from it (`adopt`): stage
configs name their inputs by content hash, so an identical config means an identical computation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import tyro

from dexfly import watchdog
from dexfly.devices import DeviceConfig
from dexfly.utils import atomic_write_text, read_json, release_compiled
from envs import physics_fingerprint

FORMAT = "dexfly.flywheel/1"
RUN_FILE = "flywheel.json"


class StageError(ValueError):
    """A stage record or output that cannot be trusted or reused (names the stage and the file)."""


def config_hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def content_hash(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents, sorted)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if not path.exists():
        raise FileNotFoundError(path)
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _record_name(stage: str) -> str:
    return stage.replace("/", "__") + ".json"


def _clock_name(stage: str) -> str:
    return "." + _record_name(stage).removesuffix(".json") + ".seconds"  # not *.json: the report reads every stages/*.json as a record


CLOCK_EVERY_S = 30.0  # how often a running stage saves its time: a killed attempt loses at most this much of it


class _StageClock:
    """A stage's time over all its attempts. Why: a long stage resumed from its checkpoint would otherwise record
    only the last attempt's seconds (the Grasp `cpu` run of session 48 recorded 490 s for an iteration-1 residual
    that had trained for 48 minutes in the session before). The time so far is saved in `path` every
    `CLOCK_EVERY_S` seconds and when the attempt ends, by an error or Ctrl-C too; the next attempt starts from it."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.before = float(json.loads(path.read_text())["seconds"]) if path.exists() else 0.0
        except (ValueError, KeyError, TypeError):  # hand-edited: the time of earlier attempts is unknown, not an error
            self.before = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name=f"clock {path.name}", daemon=True)

    def seconds(self) -> float:
        """Every attempt's seconds, this one's so far included."""
        return self.before + time.perf_counter() - self.t0

    def _save(self) -> None:
        atomic_write_text(self.path, json.dumps({"seconds": round(self.seconds(), 1)}))

    def _tick(self) -> None:
        while not self._stop.wait(CLOCK_EVERY_S):
            self._save()

    def __enter__(self) -> _StageClock:
        self.t0 = time.perf_counter()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, *_) -> None:
        self._stop.set()
        self._thread.join()
        if exc_type is not None:
            self._save()


@dataclass
class RunFolder:
    root: Path
    meta: dict

    @classmethod
    def open(cls, root: str | os.PathLike, *, task: str, preset: str, seed: int, variant: dict | None = None, impl: str = "jax") -> RunFolder:
        """Open (or start, in an empty or absent folder) the run of this task, preset, seed, variant (None or {}:
        the plain flywheel) and MJX implementation (the keys are only written for others than the plain flywheel on
        MJX-jax, so those runs keep their files)."""
        root = Path(root).resolve()
        meta = {"format": FORMAT, "task": task, "preset": preset, "seed": seed, "physics": physics_fingerprint(task),
                **({"variant": variant} if variant else {}), **({"impl": impl} if impl != "jax" else {})}
        run_file = root / RUN_FILE
        if run_file.exists():
            cls.existing(root, task=task, preset=preset, seed=seed, variant=variant, impl=impl)
        else:
            if root.exists() and any(root.iterdir()):
                raise StageError(f"{root} is not empty and holds no {RUN_FILE}: not a flywheel run folder (use another --out)")
            root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_file, json.dumps({**meta, "created": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2))
        (root / "stages").mkdir(exist_ok=True)
        return cls(root, meta)

    @classmethod
    def existing(cls, root: str | os.PathLike, *, task: str, preset: str, seed: int, variant: dict | None = None,
                 any_variant: bool = False, impl: str = "jax") -> RunFolder:
        """An existing run of this task, preset, seed, MJX implementation (and variant, unless `any_variant`), read
        only: StageError naming the folder and the difference otherwise."""
        root = Path(root).resolve()
        run_file = root / RUN_FILE
        if not run_file.exists():
            raise StageError(f"{root} holds no {RUN_FILE}: not a flywheel run folder")
        saved = read_json(run_file, StageError)
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise StageError(f"{run_file}: not a dexfly flywheel run")
        for key, want in (("task", task), ("preset", preset), ("seed", seed)):
            if saved.get(key) != want:
                raise StageError(f"{root} is a flywheel run of {key} {saved.get(key)!r}, not {want!r} (use another --out)")
        physics = physics_fingerprint(task)
        if saved.get("physics") != physics:
            was = f"model {saved['physics']}" if "physics" in saved else "a model recorded before run folders kept its fingerprint"
            raise StageError(f"{root} was simulated on {was}, not this dexfly's {task} model {physics} (the robot or scene MJCF "
                             f"changed, e.g. the Panda's friction cone; docs/flywheel.md): its stages cannot be resumed or "
                             f"reused here (use another --out)")
        if saved.get("impl", "jax") != impl:  # MJX-jax and MuJoCo Warp agree to ~1 mm, not bit for bit: no mixing stages
            raise StageError(f"{root} was simulated with MJX impl {saved.get('impl', 'jax')!r}, not {impl!r} (use another --out)")
        if not any_variant and (saved.get("variant") or {}) != (variant or {}):
            name = lambda v: json.dumps(v, sort_keys=True) if v else "the plain flywheel"  # noqa: E731
            raise StageError(f"{root} is a run of {name(saved.get('variant'))}, not {name(variant)} (use another --out)")
        return cls(root, {k: v for k, v in saved.items() if k != "created"})

    def path(self, relative: str) -> Path:
        return self.root / relative

    def _record_file(self, stage: str) -> Path:
        return self.root / "stages" / _record_name(stage)

    def _clock_file(self, stage: str) -> Path:
        return self.root / "stages" / _clock_name(stage)

    def record(self, stage: str) -> dict | None:
        f = self._record_file(stage)
        if not f.exists():
            return None
        try:
            return json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise StageError(f"stage {stage!r}: its record {f} is corrupt ({e}); redo the run from this stage") from None

    def done(self, stage: str, config: Any) -> bool:
        """True when the stage finished with this config and its outputs are intact; False when it has not
        finished. StageError when it finished with another config or an output changed since."""
        rec = self.record(stage)
        if rec is None:
            return False
        if rec.get("config_hash") != config_hash(config):
            raise StageError(f"stage {stage!r} finished with other settings than this run asks for "
                             f"({_diff(rec.get('config'), config)}); rerun with --redo-from {stage} to redo it and what follows")
        for rel, digest in rec.get("outputs", {}).items():
            p = self.root / rel
            if not p.exists():
                raise StageError(f"stage {stage!r}: its output {p} is missing; rerun with --redo-from {stage}")
            if content_hash(p) != digest:
                raise StageError(f"stage {stage!r}: its output {p} changed since the stage finished (corrupt or edited); "
                                 f"rerun with --redo-from {stage}")
        return True

    def run_stage(self, stage: str, config: Any, body: Callable[[], tuple[list[str], dict]], *, label: str | None = None,
                  watch: str | None = None, donors: tuple[RunFolder, ...] = (), log: Callable[[str], Any] = print,
                  devices: int = 1) -> dict:
        """The stage's record: as it is when the stage finished with this config; copied from the first donor run
        that finished it identically; else from running `body` (which writes the outputs and returns (outputs
        relative to the run folder, summary)) under the watchdog (`watch`), then `finish`. `label` names the stage
        in the log; `devices` (how many the stage split its batches over) is recorded beside its time, not in its
        config: the numbers of a stage do not depend on it beyond float rounding, its time does. Compiled programs
        are released after the body, so that a long run's memory mappings stay bounded (`release_compiled`); a
        program a later stage shares reloads from the persistent cache."""
        label = label or stage
        if self.done(stage, config):
            rec = self.record(stage)
            log(f"[dim]{label}: done ({rec['seconds']:.0f} s), skipped")
            return rec
        for donor in donors:
            rec = self.adopt(stage, config, donor)
            if rec is not None:
                log(f"[dim]{label}: identical to {donor.root}'s, copied from there")
                return rec
        log(f"[bold]{label}[/bold] ...")
        clock_file = self._clock_file(stage)
        with _StageClock(clock_file) as clock, watchdog.stage(watch or label):
            outputs, summary = body()
        seconds = clock.seconds()
        release_compiled()
        rec = self.finish(stage, config, outputs, seconds, summary, devices=devices, earlier_attempts=clock.before)
        clock_file.unlink(missing_ok=True)
        return rec

    def finish(self, stage: str, config: Any, outputs: list[str], seconds: float, summary: dict | None = None, *, devices: int = 1,
               earlier_attempts: float = 0.0) -> dict:
        """Write the stage's record. `seconds` is the stage's time over all its attempts; `earlier_attempts`, the part
        of it before the attempt that finished (recorded only when the stage was resumed)."""
        rec = {"stage": stage, "config_hash": config_hash(config), "config": config,
               "outputs": {rel: content_hash(self.root / rel) for rel in outputs}, "seconds": round(seconds, 1), "devices": devices,
               "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "summary": summary or {}}
        if earlier_attempts:
            rec["seconds_in_earlier_attempts"] = round(earlier_attempts, 1)
        atomic_write_text(self._record_file(stage), json.dumps(rec, indent=2, default=str))
        return rec

    def adopt(self, stage: str, config: Any, donor: RunFolder) -> dict | None:
        """Copy `stage` from `donor` when it finished there with this config and its outputs are intact (each
        output copied to a temporary name, then renamed); returns the new record, or None when the donor's
        stage differs or is unfinished. The record keeps the donor's time and summary, plus `adopted_from`."""
        rec = donor.intact_record(stage)
        if rec is None or rec.get("config_hash") != config_hash(config):
            return None
        for rel in rec.get("outputs", {}):
            src, dst = donor.root / rel, self.root / rel
            tmp = dst.with_name(f".{dst.name}.adopting")
            if tmp.is_dir():
                shutil.rmtree(tmp)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, tmp, dirs_exist_ok=True)
                if dst.is_dir():
                    shutil.rmtree(dst)
            else:
                shutil.copy2(src, tmp)
            os.replace(tmp, dst)
        new = {**rec, "adopted_from": str(donor.root)}
        atomic_write_text(self._record_file(stage), json.dumps(new, indent=2, default=str))
        return new

    def intact_record(self, stage: str) -> dict | None:
        """The stage's record when it finished here and its outputs are as it wrote them; None otherwise."""
        rec = self.record(stage)
        if rec is None:
            return None
        outputs = rec.get("outputs", {})
        if not all((self.root / rel).exists() and content_hash(self.root / rel) == digest for rel, digest in outputs.items()):
            return None
        return rec

    def output_hash(self, stage: str, rel: str) -> str:
        rec = self.record(stage)
        if rec is None or rel not in rec.get("outputs", {}):
            raise StageError(f"stage {stage!r} has not finished (no output {rel})")
        return rec["outputs"][rel]

    def redo_from(self, stages_in_order: list[str], stage: str, outputs_of: dict[str, list[str]]) -> list[str]:
        """Forget `stage` and every later one: their records and outputs are removed. Returns the removed stages."""
        if stage not in stages_in_order:
            raise StageError(f"unknown stage {stage!r}; this run's stages: {stages_in_order}")
        removed = []
        for s in stages_in_order[stages_in_order.index(stage):]:
            f = self._record_file(s)
            self._clock_file(s).unlink(missing_ok=True)  # a redone stage's time starts again
            for rel in outputs_of.get(s, []):
                p = self.root / rel
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
            if f.exists():
                f.unlink()
                removed.append(s)
        return removed


def _diff(old: Any, new: Any) -> str:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return "config differs"
    keys = sorted(k for k in set(old) | set(new) if json.dumps(old.get(k), sort_keys=True, default=str) != json.dumps(new.get(k), sort_keys=True, default=str))
    return "changed: " + ", ".join(keys) if keys else "config differs"


@dataclass(frozen=True)
class RunOptions:
    """How a run script executes its stages, apart from what it computes: the flags experiments/flywheel.py and
    baselines.py share (nested without a prefix: --impl, --no-video, --no-progress, --stall-timeout, --devices)."""

    impl: str = "jax"
    """MJX implementation of every stage that simulates: jax, or warp (MuJoCo Warp, NVIDIA GPUs' fast path; pip install -e
    '.[warp]'; docs/multi_device.md). Part of the run's identity: a run is resumed with its own."""
    video: bool = True
    progress: bool = True
    stall_timeout: float = watchdog.DEFAULT_TIMEOUT_S
    """Seconds without progress after which a stage stops with an error (0: no watchdog); rerun to resume."""
    parallel: Annotated[DeviceConfig, tyro.conf.arg(name="")] = field(default_factory=DeviceConfig)
    """Devices that batches are split over, and the multi-host setup (--devices, --coordinator-address, ...)."""

    def run_kwargs(self) -> dict[str, Any]:
        """The keyword arguments `Flywheel` and `Baselines` take from these options (joins a multi-host run and builds
        the mesh)."""
        return {"impl": self.impl, "video": self.video, "progress": self.progress, "mesh": self.parallel.mesh()}


def run_guarded(task: str, label: str, stall_timeout: float, body: Callable[[], Any]) -> Any:
    """What a flywheel-run script does around its run: refuse an unknown task, watch the run for stalls (`label`
    names it in the watchdog's message; `stall_timeout` 0 turns it off), and end with a one-line message (SystemExit)
    on the errors a user can act on (a missing or foreign file or run folder, a bad value, a catalog or stage error)."""
    from dexfly.catalog import TASKS, CatalogError

    if task not in TASKS:
        raise SystemExit(f"unknown task {task!r}; available: {list(TASKS)}")
    try:
        with watchdog.stage(label, timeout_s=stall_timeout):
            return body()
    except (FileNotFoundError, ValueError, CatalogError) as e:  # StageError is a ValueError
        raise SystemExit(str(e)) from None


__all__ = ["FORMAT", "RunFolder", "RunOptions", "StageError", "config_hash", "content_hash", "run_guarded"]
