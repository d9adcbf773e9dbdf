"""What tune's command line shows in --help before Optuna is imported (it is an extra)."""

MAX_RETRIES = 2  # a trial whose worker stops is tried again this many times at most, then counts as lost
STORAGE_ENV = "MNIST20K_STORAGE"  # the database URL, for --storage and for the workers (never their argv)
PRUNERS = ("median", "hyperband", "none")  # make_pruner's names
AGGREGATES = ("mean", "min")  # a trial's value over its seeds
OBJECTIVES = {"accuracy": "maximize", "params": "minimize"}  # --objectives: a trial's values, in this order
