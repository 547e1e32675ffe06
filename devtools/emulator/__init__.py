"""An HTTP server that speaks each AI provider's wire format, for tests and local runs."""
