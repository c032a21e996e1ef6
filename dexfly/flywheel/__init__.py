"""The data flywheel: schedules and test sets (data), run folders with stage records, the loop and its report.

    from dexfly.flywheel.loop import Flywheel, run_flywheel
    report = run_flywheel("grasp", "tiny", "runs/flywheel_tiny", iterations=2)

See docs/flywheel.md.
"""
