"""What an API key may do, decided in one place by the request's method and route.

`read` — every GET; `trigger` — starting an evaluation; `manage` — every other change (orgs
and their matrix, keys). Routers declare nothing: a route that is not listed as a trigger and
changes something needs `manage`, so a new route is never open to a narrower key by mistake.
"""

from __future__ import annotations

import enum


class Scope(enum.StrEnum):
    READ = "read"
    TRIGGER = "trigger"
    MANAGE = "manage"


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes (method, path template) that start work rather than change configuration.
TRIGGER_ROUTES = frozenset({("POST", "/orgs/{org_id}/evaluations")})


def required_scope(method: str, route: str) -> Scope:
    if method.upper() in _READ_METHODS:
        return Scope.READ
    if (method.upper(), route) in TRIGGER_ROUTES:
        return Scope.TRIGGER
    return Scope.MANAGE
