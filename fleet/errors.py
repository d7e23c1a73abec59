"""The error tree every fleet component raises.

Two branches decide what a caller does next: a `TemporaryError` is retried
after its `delay`; a `PermanentError` stops and is reported as it is. Messages
name the object, file or field at fault, never a secret.
"""


class FleetError(Exception):
    """Base of every error fleet raises on purpose."""


class TemporaryError(FleetError):
    """Worth retrying: the cause is expected to go away (a starting process, a busy API)."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(FleetError):
    """Retrying cannot help until someone changes an input."""


class DevEnvError(PermanentError):
    """The local fleet could not be built, started or stopped."""


class BuildError(DevEnvError):
    """A test binary failed to build; the message carries the command and its output."""
