"""Errors a user can act on.

Raise :class:`UserError` (or a subclass such as :class:`core.data.DataError`) for a problem
with the user's input: a missing file, a bad option value, a checkpoint of another model.
Every command runs under :func:`core.cli.run_command`, which prints such an error as one
line, ``error: <message>``, and exits with status 2, with no traceback.
"""


class UserError(Exception):
    """A problem with the user's input or options. The message names the file or option."""
