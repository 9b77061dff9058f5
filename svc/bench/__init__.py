"""The benchmark (`python -m svc bench`): the real service on generated workloads, beside the
ceiling of a bare fetch-and-ack loop on the same stream (docs/performance.md)."""
