"""The project's user-facing errors: what a user can fix by changing an input, a file or a flag.

Every error meant to reach a user as a message derives from `UserError`; the command line prints
it as one paragraph and exits with code 2, without a traceback (`align.cli`), while any other
exception is a bug and keeps its traceback. Each class also derives from the built-in type it
replaces (`ValueError`, `KeyError`, `RuntimeError`), so `except ValueError` elsewhere still
catches it.

The classes live next to the code that raises them (`DataError` in `align.data.decode`,
`CheckpointError` in `align.io`, `RunLocked` in `align.training.rundir`, ...); this module holds
only the base and the errors of the lowest layers (configuration values, registry names). It
imports nothing from `align`, so every layer can use it.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of the errors whose message tells a user what to change (no traceback at the CLI)."""


class ConfigError(UserError, ValueError):
    """A configuration value (a config key, a flag, a hyperparameter) that cannot be used; the
    message names the key and the value."""


class UnknownName(UserError, KeyError):
    """A name that is not in a registry; the message lists the valid choices."""

    def __str__(self) -> str:
        # KeyError's own str() is the repr of its argument (quoted); a message reads better bare.
        return str(self.args[0]) if self.args else ""
