"""tune: a search over settings and network arguments on Optuna, each trial judged on training images held out
of training (--val), never on the test set.

    DIR/study.log          Optuna's journal: the study, shared by the workers on this machine
    DIR/trial-0007/        a trial, an ordinary run folder (one per seed with several seeds)
    DIR/tune.json          the search, the device and versions, every trial, the best, the importances
    DIR/study.png          the optimization history and the importances

limits.py holds what the command line shows before Optuna is imported, space.py reads --search, prepare.py
checks a study before anything is made, study.py keeps the storage and the claiming of trials, worker.py
trains trials, run.py starts and watches the workers, record.py writes tune.json and study.png.

Optuna is an extra (mnist20k[tune]), and this package imports nothing, so that mnist20k.tune.limits imports
without it: import what you need from its modules.
"""
