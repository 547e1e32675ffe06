"""Webhooks: partners' endpoints, signed events from an outbox, delivery by the worker."""
