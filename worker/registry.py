"""The job kinds this worker runs, by message type."""

from __future__ import annotations

from app.evaluations.jobs import evaluate_org_kind
from app.evaluations.rescore import rescore_org_kind
from app.jobs import JobKinds
from app.settings import Settings
from app.webhooks.delivery import deliver_webhook_kind


def job_kinds(settings: Settings) -> JobKinds:
    kinds = (
        evaluate_org_kind(settings),
        rescore_org_kind(settings),
        deliver_webhook_kind(settings),
    )
    return {kind.type: kind for kind in kinds}
