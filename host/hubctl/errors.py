"""One exception type per layer, translated once into a message and exit code.

A HubctlError is "your device or your input, not our bug": its message is a full
sentence that says what happened and what to try. The CLI prints it as
``hubctl: <message>`` and exits with ``exit_code``.
"""


class HubctlError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg} {self.hint}" if self.hint else msg


class UsageError(HubctlError):
    """Bad arguments or input files."""

    exit_code = 2


class HubNotFoundError(HubctlError):
    """DIR or PORT does not hold a hub."""

    exit_code = 3


class HubStateError(HubctlError):
    """The hub is in the wrong state for this operation (running, busy, corrupt)."""

    exit_code = 4


class TransportError(HubctlError):
    """Talking to the hub over its console failed."""

    exit_code = 5
