"""What an API key may do, decided in one place by the request's method and route.

`read` — every GET, and minting or revoking a report link; `trigger` — starting an
evaluation; `manage` — every other change (orgs and their matrix, keys). Routers declare
nothing: a route that is not listed as read or trigger and changes something needs `manage`,
so a new route is never open to a narrower key by mistake.
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
TRIGGER_ROUTES = frozenset({("POST", "/orgs/{org_id}/evaluations"), ("POST", "/evaluations/bulk")})
# Changes that only share, or stop sharing, what a read key already sees: report links.
READ_ROUTES = frozenset(
    {
        ("POST", "/orgs/{org_id}/report-links"),
        ("POST", "/orgs/{org_id}/report-links/{link_id}/revoke"),
        ("DELETE", "/orgs/{org_id}/report-links/{link_id}"),
    }
)


def required_scope(method: str, route: str) -> Scope:
    if method.upper() in _READ_METHODS or (method.upper(), route) in READ_ROUTES:
        return Scope.READ
    if (method.upper(), route) in TRIGGER_ROUTES:
        return Scope.TRIGGER
    return Scope.MANAGE
