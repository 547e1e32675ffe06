"""The one domain error type; `app.api` maps it to HTTP in one place."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


class DomainError(Exception):
    """An expected failure with the HTTP status and stable error code clients see."""

    status_code: int = 400
    code: str = "bad_request"

    def __init__(self, detail: Any, *, code: str | None = None, status_code: int | None = None):
        super().__init__(str(detail))
        self.detail = detail
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class NotFoundError(DomainError):
    status_code = 404
    code = "not_found"


class ConflictError(DomainError):
    status_code = 409
    code = "conflict"


class InsufficientBalanceError(DomainError):
    status_code = 402
    code = "insufficient_balance"

    def __init__(self, *, runs: int, required: Decimal, available: Decimal) -> None:
        super().__init__(
            {
                "message": f"the partner's balance cannot cover {runs} run(s)",
                "required": str(required),
                "available": str(available),
            }
        )
        self.required = required
        self.available = available


class UnauthorizedError(DomainError):
    status_code = 401
    code = "unauthorized"


class ForbiddenError(DomainError):
    status_code = 403
    code = "forbidden"


class InvalidInputError(DomainError):
    status_code = 422
    code = "invalid_input"
