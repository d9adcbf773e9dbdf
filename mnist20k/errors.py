"""The one exception type for failures a person can fix: the CLI prints its message, no traceback."""


class Mnist20kError(Exception):
    """An expected failure, with a message that says what is wrong and what to do."""

    exit_code = 1


class UsageError(Mnist20kError):
    """An option or argument no run can use."""

    exit_code = 2


class InvalidNetwork(UsageError):
    """Arguments a network's constructor refuses (tune records such a trial as invalid)."""


class InvalidShape(InvalidNetwork):
    """Arguments each fine alone that cannot work together (a map shrunk below 1x1): in a study, only a trial's
    combination can be refused, not one searched value."""


class DataError(Mnist20kError):
    """MNIST files missing, unreadable or malformed."""


class CheckpointError(Mnist20kError):
    """A checkpoint missing, corrupt, unsafe or from an incompatible version."""


class TrainingDiverged(Mnist20kError):
    """The loss stopped being a finite number."""


class OutputError(Mnist20kError):
    """A file of the run could not be written: a full disk, a folder made read-only."""


class Renamed(UserWarning):
    """A network or recipe asked for by its old name: it is used under its new one, which the note says."""


class SourceChanged(UserWarning):
    """The source file of a user's network differs from the one its checkpoint was trained with: its
    weights are still loaded, if they fit."""


class NotApplied(UserWarning):
    """A setting that does nothing where the run is: --amp on a device other than CUDA."""
