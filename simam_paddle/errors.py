"""The failures the tools report, each with its exit code in ``simam_paddle.cli``.

They live here, not beside the code that raises them, so that a tool run as ``python -m
simam_paddle.<tool>`` (whose module is then ``__main__``) raises the same classes that ``cli.run``
catches.
"""

import signal


class ConfigError(ValueError):
    """Bad input: a config file, key or value, an argument or a file that cannot be used; the message
    names it and the fix."""


class FolderInUse(ConfigError):
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
