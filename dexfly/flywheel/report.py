"""The report of a flywheel run: the paper's Table 1 from the files the stages wrote (never from memory).

Row i: D_i's diversity (objects O, environments E, poses P, configurations present, trajectories), T_O^i (the
objects introduced in generating D_i, one fixed scene: at i = 1 the base trained on D_1; later the base of
iteration i-1 -> the combined policy that collected D_i) and T_OEP (the base trained on D_i). Writes
`report.json`, `report.md` and `success.png` in the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _load(path: Path) -> Any:
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _rate(r: dict | None) -> str:
    return "—" if r is None else f"{100 * r['mean']:.1f}% ± {100 * r['std']:.1f}%"


def generation_successes(summary: dict) -> int | None:
    """Successful attempts of a generating stage (A_EP or rollouts), from its record. Records written before the count
    was kept: the warm-up's own A_EP rate times its attempts; a per-object augment's is unknown (None), since its stored
    rate was demos kept / attempts and a batch runs whole, so that understated A_EP."""
    if "successes" in summary:
        return int(summary["successes"])
    if summary.get("success_rate") is not None and summary.get("attempts") and "per_object" not in summary:
        return int(round(summary["success_rate"] * summary["attempts"]))
    return None


def _generation_rate(summary: dict) -> float | None:
    ok = generation_successes(summary)
    return None if ok is None or not summary.get("attempts") else ok / summary["attempts"]


def build_report(root: Path, task: str, preset: str, iterations: int) -> dict:
    """Table 1 rows and generation rates from the run folder's records and evaluation files."""
    from dexfly.policies.residual.checkpoint import EVAL_FILE  # the residual run's evaluation (imported here: orbax)

    rows, generation = [], []
    records = lambda name: _load(root / "stages" / (name.replace("/", "__") + ".json"))  # noqa: E731
    for i in range(1, iterations + 1):
        made = records("warmup" if i == 1 else f"iter{i - 1}/augment")
        diversity = {k: made["summary"].get(k) for k in ("objects", "environments", "poses", "configs", "trajectories")} if made else {}
        c = (made or {}).get("config", {})
        if (c.get("c1") or c.get("c_aug") or {}).get("sampled_poses"):
            diversity["sampled_poses"] = True  # P counts poses drawn per attempt, not catalog poses: see table1_markdown
        evaluated = _load(root / f"iter{i}" / "eval.json") or {}
        if i == 1:
            t_o_base, t_o_combined = evaluated.get("t_o_base"), None
        else:
            res = _load(root / f"iter{i - 1}" / "residual" / EVAL_FILE) or {}
            t_o_base, t_o_combined = res.get("base_success"), res.get("combined_success")
        rows.append({"iteration": i, **diversity, "t_o_base": t_o_base, "t_o_combined": t_o_combined, "t_oep": evaluated.get("t_oep")})
        if made:
            source = "A_EP from the seed" if i == 1 else "A_EP from rollouts"
            if made["summary"].get("augmented") is False:  # the no-A_EP ablation: rollouts kept as they are, nothing generated
                source = "rollouts, no A_EP"
            generation.append({"iteration": i, "source": source, "success_rate": _generation_rate(made["summary"]),
                               "attempts": made["summary"].get("attempts")})
            if seeded := made["summary"].get("from_seed"):  # a preset's seed_source_share: part of D_i replayed from the seed
                generation.append({"iteration": i, "source": "A_EP from the seed", "success_rate": seeded["success_rate"],
                                   "attempts": seeded["attempts"]})
        collected = records(f"iter{i}/collect")
        if collected:
            policy = "base" if collected["summary"].get("policy") == "base" else "combined"  # base: the no-residual ablation
            generation.append({"iteration": i, "source": f"{policy}-policy rollouts", "success_rate": _generation_rate(collected["summary"]),
                               "attempts": collected["summary"].get("attempts")})
    stage_seconds, stage_devices = {}, {}
    for f in sorted((root / "stages").glob("*.json")):
        rec = json.loads(f.read_text())
        stage_seconds[rec["stage"]] = rec["seconds"]
        stage_devices[rec["stage"]] = rec.get("devices", 1)  # records written before devices were recorded ran on one
    return {"task": task, "preset": preset, "iterations": iterations, "table1": rows, "generation": generation, "stage_seconds": stage_seconds,
            "stage_devices": stage_devices, "total_seconds": round(sum(stage_seconds.values()), 1)}


def _sampled_note(report: dict) -> str | None:
    """What Table 1's P and configs mean for the iterations whose A_EP sampled its poses (None: none did)."""
    sampled = [str(r["iteration"]) for r in report["table1"] if r.get("sampled_poses")]
    if not sampled:
        return None
    return (f"Iterations {', '.join(sampled)}: A_EP drew every attempt's pose from the task's ranges (`sampled_poses`), so P counts "
            "about one pose per trajectory and configs = O x E x P are not comparable with rows or runs over catalog poses (the paper's).")


def table1_markdown(report: dict) -> str:
    lines = [f"# Flywheel report: {report['task']}, preset `{report['preset']}`", "",
             "| Iter. | O | E | P | Configs | Traj. | SR in T_O (base -> combined) | SR in T_OEP |", "|---|---|---|---|---|---|---|---|"]
    for r in report["table1"]:
        t_o = _rate(r["t_o_base"]) + ("" if r["t_o_combined"] is None else f" -> {_rate(r['t_o_combined'])}")
        lines.append(f"| i = {r['iteration']} | {r.get('objects', '—')} | {r.get('environments', '—')} | {r.get('poses', '—')} | "
                     f"{r.get('configs', '—')} | {r.get('trajectories', '—')} | {t_o} | {_rate(r['t_oep'])} |")
    note = _sampled_note(report)
    if note:
        lines += ["", note]
    lines += ["", "Generation success rate per data source:", "", "| Iter. | source | success rate |", "|---|---|---|"]
    for g in report["generation"]:
        if g["success_rate"] is not None:
            rate = f"{100 * g['success_rate']:.1f}%"
        else:  # no attempts at all (no successful rollout to augment), or a record from before successes were counted
            rate = "—" if not g.get("attempts") else "— (not recorded)"
        lines.append(f"| {g['iteration']} | {g['source']} | {rate} |")
    n_dev = report.get("stage_devices", {})
    lines += ["", "Stage times (s; with the devices a stage split its batches over, where more than one): "
              + ", ".join(f"{k} {v:.0f}" + (f" ({n_dev[k]} devices)" if n_dev.get(k, 1) > 1 else "") for k, v in report["stage_seconds"].items()),
              f"Total: {report['total_seconds']:.0f} s"]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dexfly.utils import atomic_path

    rows = report["table1"]
    its = [r["iteration"] for r in rows]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    for key, label in (("t_oep", "T_OEP (base on D_i)"), ("t_o_combined", "T_O (combined)"), ("t_o_base", "T_O (base)")):
        pts = [(r["iteration"], r[key]["mean"], r[key]["std"]) for r in rows if r.get(key)]
        if pts:
            x, y, e = zip(*pts)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=label)
    ax.set(title=f"success over iterations ({report['task']})", xlabel="iteration", ylabel="success rate", ylim=(-0.02, 1.02), xticks=its)
    if ax.get_legend_handles_labels()[0]:  # a run stopped before its first evaluation has no success to plot yet
        ax.legend(fontsize=7)
    for key in ("configs", "trajectories", "objects"):
        pts = [(r["iteration"], r[key]) for r in rows if r.get(key)]
        if pts:
            ax2.plot(*zip(*pts), marker="o", label=key)
    ax2.set(title="dataset diversity", xlabel="iteration", yscale="log", xticks=its)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def write_report(flywheel) -> dict:
    """Build, write (report.json, report.md, success.png) and print the report of a Flywheel run."""
    from rich.console import Console
    from rich.table import Table

    from dexfly.utils import atomic_write_text

    root = flywheel.run_dir.root
    report = build_report(root, flywheel.task, flywheel.preset.name, flywheel.n)
    atomic_write_text(root / "report.json", json.dumps(report, indent=2))
    atomic_write_text(root / "report.md", table1_markdown(report))
    plot(report, root / "success.png")
    table = Table(title=f"Table 1: {flywheel.task}, preset {flywheel.preset.name}", caption=_sampled_note(report))
    for col in ("iter.", "O", "E", "P", "configs", "traj.", "SR in T_O (base -> combined)", "SR in T_OEP"):
        table.add_column(col)
    for r in report["table1"]:
        t_o = _rate(r["t_o_base"]) + ("" if r["t_o_combined"] is None else f" -> {_rate(r['t_o_combined'])}")
        table.add_row(str(r["iteration"]), *(str(r.get(k, "—")) for k in ("objects", "environments", "poses", "configs", "trajectories")), t_o,
                      _rate(r["t_oep"]))
    Console().print(table)
    Console().print(f"total stage time {report['total_seconds']:.0f} s; report in {root / 'report.md'}")
    print("t_oep_success=" + ",".join("nan" if r["t_oep"] is None else f"{r['t_oep']['mean']:.4f}" for r in report["table1"]))
    return report


__all__ = ["build_report", "plot", "table1_markdown", "write_report"]
