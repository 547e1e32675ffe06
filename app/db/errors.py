"""Which failures mean "the database is not there right now" rather than a bug."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError


def database_unavailable(exc: BaseException) -> bool:
    """Refused or reset connections, connect and statement timeouts, an exhausted pool, a
    server shutting down or starting up: worth retrying later, not worth a 500."""
    if isinstance(exc, OSError | PoolTimeoutError):  # TimeoutError is an OSError
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    return False
