#!/usr/bin/env python3
"""Decide from `aws ecs describe-services` output (stdin) how a deployment went.

  check_deployment.py --deployment-id ID --task-definition ARN < describe-services.json

Prints one line, `succeeded: …`, `failed: …` or `pending: …`, and exits 0; exit 1 when the
input cannot be read (deploy.sh passes it on as a failed step: its exit 2 means an invalid
configuration). ID is the PRIMARY deployment that update-service or create-service returned,
ARN the task definition it deploys.

A deployment the circuit breaker rolled back is a failure even though the service is steady
again (the services-stable waiter succeeds then too): its rolloutState is FAILED, or it is gone
and another deployment runs a different revision.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def decide(described: dict[str, Any], deployment_id: str, task_definition: str) -> str:
    services = [s for s in described.get("services", []) if s.get("status") == "ACTIVE"]
    if not services:
        return "failed: the service is missing or inactive"
    service = services[0]
    deployments = service.get("deployments", [])
    ours = next((d for d in deployments if d.get("id") == deployment_id), None)
    if ours is not None and ours.get("rolloutState") == "FAILED":
        reason = ours.get("rolloutStateReason") or "no reason given"
        return f"failed: the rollout of {revision(task_definition)} failed: {reason}"
    if ours is None or revision(service.get("taskDefinition", "")) != revision(task_definition):
        primary: dict[str, Any] = next((d for d in deployments if d.get("status") == "PRIMARY"), {})
        running = revision(primary.get("taskDefinition") or service.get("taskDefinition", "?"))
        return f"failed: {revision(task_definition)} was rolled back or replaced; {running} runs"
    if ours.get("status") != "PRIMARY":
        return f"failed: deployment {deployment_id} was superseded"
    steady = len(deployments) == 1 and service.get("runningCount") == service.get("desiredCount")
    if steady and ours.get("rolloutState", "COMPLETED") == "COMPLETED":
        return (
            f"succeeded: {revision(task_definition)} runs "
            f"{service.get('runningCount')}/{service.get('desiredCount')} tasks"
        )
    return (
        f"pending: {service.get('runningCount')}/{service.get('desiredCount')} tasks running, "
        f"{len(deployments)} deployment(s), rollout {ours.get('rolloutState', 'unknown')}"
    )


def revision(task_definition: str) -> str:
    """`family:revision` of a task definition ARN (or of `family:revision` itself)."""
    return task_definition.rsplit("/", 1)[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deployment-id", required=True)
    parser.add_argument("--task-definition", required=True)
    args = parser.parse_args(argv)
    try:
        described = json.load(sys.stdin)
    except json.JSONDecodeError as exc:
        print(f"describe-services output is not JSON: {exc}", file=sys.stderr)
        return 1
    print(decide(described, args.deployment_id, args.task_definition))
    return 0


if __name__ == "__main__":
    sys.exit(main())
