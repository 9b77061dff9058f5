"""The crash harness: a deterministic workload run through several replicas while replicas,
Redis and NATS are killed and restarted, then compared with the in-process engine."""
