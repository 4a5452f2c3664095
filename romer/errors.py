"""The one exception type a user ever sees.

Every failure that the user can fix (bad input, a missing file, no network) is raised as
`RomerError` with a one-line message that names the problem and the fix; the CLI prints it
without a traceback. Anything else is a bug in romer and keeps its traceback.
"""


class RomerError(Exception):
    """A problem the user can fix; the message says what it is and how."""
