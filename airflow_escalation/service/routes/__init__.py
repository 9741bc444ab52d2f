"""Routes of the escalation service, one module per resource (mounted under ``/api/v1``)."""
