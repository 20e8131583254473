"""The one exception type users see: a clear, one-line message (the CLI prints it and exits 2)."""


class CitysegError(Exception):
    """A user-facing error. ``str(err)`` is one line naming the file and the problem."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
