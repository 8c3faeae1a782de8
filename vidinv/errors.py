"""The one error class users see: a one-line message, exit code 2 from the CLI."""


class VidinvError(Exception):
    """A problem with the user's input, config or environment, explained in one line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
