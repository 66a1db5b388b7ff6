"""Errors that carry a one-line reason for the user.

The CLI turns `InputError` into exit code 2 with its message on stderr; services map it to
INVALID_ARGUMENT. Anything else is a bug and may show a traceback.
"""


class InputError(ValueError):
    """Bad input from the user: a file, an argument or a document we cannot accept."""
