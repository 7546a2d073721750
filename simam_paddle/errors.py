"""The failures the package reports, each with its exit code in ``simam_paddle.cli``.

Bad input (exit 2; nothing was done) is a ``BadInput``, one class per kind of input, each message
naming the input and the fix:

    ConfigError        a config file, key or value (and what follows from one: model.pretrained, data.root's classes)
    ArgumentError      an argument of a tool that cannot be used (a format, a tolerance, a number of images, ...)
    PathError          a run directory or export folder that is not one, or holds something unusable
    DataError          a data source that cannot be read or does not hold what is needed
    WeightsMismatch    a state dict that does not fit its model
    CheckpointError    a checkpoint file that cannot be read (a run's, or a PyTorch checkpoint to convert)
    MissingDependency  an optional package that the asked-for work needs (VisualDL, paddle2onnx, onnxruntime)

A missing file is Python's ``FileNotFoundError``, and an unusable environment variable of the SimAM
library a ``SettingError`` (``simam_paddle.native``), also exit 2. The work failing is exit 1
(``ExportError``, and ``KernelUnavailable``, which lives in ``simam_paddle.native`` because
the SimAM library imports nothing of the experiment); a diverged training is exit 3
(``TrainingDiverged``). Any other exception is a bug and keeps its traceback.

They live here, not beside the code that raises them, so that a tool run as ``python -m
simam_paddle.<tool>`` (whose module is then ``__main__``) raises the same classes that ``cli.run``
catches.
"""

import signal


class BadInput(ValueError):
    """Input that cannot be used; the message names it and the fix."""


class ConfigError(BadInput):
    """A config file, key or value that cannot be used."""


class ArgumentError(BadInput):
    """An argument of a tool (or of the function behind it) that cannot be used."""


class PathError(BadInput):
    """A run directory or an export folder that is not one, or holds something unusable."""


class DataError(BadInput):
    """A data source that cannot be read, or does not hold what the work needs."""


class WeightsMismatch(BadInput):
    """A state dict that does not fit a model; the message names the source, the model and the keys."""


class CheckpointError(BadInput):
    """A checkpoint that cannot be read: a run's checkpoint, or a file that is not a PyTorch zip
    checkpoint of tensors and plain values."""


class MissingDependency(BadInput):
    """An optional package that the asked-for work needs is not installed; the message says how to install it."""


class FolderInUse(PathError):
    """A run directory or export folder that another living process holds (``io.hold_lock``); nothing was done."""


class DiskFull(RuntimeError):
    """A write found no space left on its device; the message names the file, the space left, and says
    that what was written before is intact (``io``'s writes replace a file only once the new one is complete)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf."""


class ExportError(RuntimeError):
    """An export that could not be made or does not match its model; the message says why."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped the work; the message says what was kept. A subclass of
    KeyboardInterrupt, so that every clean-up that Ctrl-C runs runs for SIGTERM too."""

    def __init__(self, message: str = "interrupted", signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum
