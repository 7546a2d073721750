"""The failures the tools report, each with its exit code in ``simam_paddle.cli``.

They live here, not beside the code that raises them, so that a tool run as ``python -m
simam_paddle.<tool>`` (whose module is then ``__main__``) raises the same classes that ``cli.run``
catches.
"""


class ConfigError(ValueError):
    """Bad input: a config file, key or value, an argument or a file that cannot be used; the message
    names it and the fix."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf."""


class ExportError(RuntimeError):
    """An export that could not be made or does not match its model; the message says why."""
