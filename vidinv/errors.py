"""The one error class users see: a one-line message, exit code 2 from the CLI."""


class VidinvError(Exception):
    """A problem with the user's input, config or environment, explained in one line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
