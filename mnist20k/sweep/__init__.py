"""sweep: many runs of one recipe: seeds times a grid of settings, each an ordinary run folder, trained as local
`mnist20k train` processes, summarized from the runs' own metrics files.

    DIR/sweep.json             the settings, device, versions, every run's epochs, the summary
    DIR/seed-3/                a run folder (without --set)
    DIR/lr=0.1/seed-3/         a run folder of one grid configuration (with --set lr=...)

Each run is a child process running `mnist20k train`, so `eval`, `predict` and `--resume` work on each
folder, and a run's numbers are those of the same `mnist20k train` command: on a CPU every child keeps
PyTorch's default thread count whatever --jobs is, since the thread count changes a CPU run's numerics.

plan.py decides what runs (seeds x grid -> folders and configs), jobs.py trains them as child processes
through mnist20k.children (as tune runs its workers), and record.py keeps sweep.json.
"""

from mnist20k.children import Interrupted
from mnist20k.seeds import parse_seeds
from mnist20k.sweep.jobs import child_command, last_log_line, run, run_state
from mnist20k.sweep.plan import (
    SWEEP_FILE,
    Job,
    Planned,
    State,
    Sweep,
    check_folder,
    check_runs_can_start,
    configuration_name,
    default_jobs,
    identity,
    parse_grid,
    plan,
    prepare,
    run_label,
)
from mnist20k.sweep.record import build_record, read_metrics, summary_object, write_record

__all__ = [
    "SWEEP_FILE",
    "Interrupted",
    "Job",
    "Planned",
    "State",
    "Sweep",
    "build_record",
    "check_folder",
    "check_runs_can_start",
    "child_command",
    "configuration_name",
    "default_jobs",
    "identity",
    "last_log_line",
    "parse_grid",
    "parse_seeds",
    "plan",
    "prepare",
    "read_metrics",
    "run",
    "run_label",
    "run_state",
    "summary_object",
    "write_record",
]
