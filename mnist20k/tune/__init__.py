"""tune: a search over settings and network arguments on Optuna, each trial judged on training images held out
of training (--val), never on the test set.

    DIR/study.log          Optuna's journal: the study, shared by the workers on this machine
    DIR/trial-0007/        a trial, an ordinary run folder (one per seed with several seeds)
    DIR/tune.json          the search, the device and versions, every trial, the best, the importances
    DIR/study.png          the optimization history and the importances

space.py reads --search, prepare.py checks a study before anything is made, study.py keeps the storage and
the claiming of trials, worker.py trains trials, run.py starts and watches the workers, record.py writes
tune.json and study.png.
"""

from mnist20k.tune.prepare import TUNE_FILE, Tune, prepare
from mnist20k.tune.record import build_record, confirm_command
from mnist20k.tune.run import run

__all__ = ["TUNE_FILE", "Tune", "build_record", "confirm_command", "prepare", "run"]
