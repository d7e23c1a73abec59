import signal

import pytest


def pytest_sessionstart(session: pytest.Session) -> None:
    # CI and shells stop runs with SIGTERM: turn it into KeyboardInterrupt so
    # that session fixtures tear the local fleet down instead of leaving it.
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
