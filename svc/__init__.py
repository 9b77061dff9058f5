"""The triggers service: an event-automation engine on NATS JetStream and Redis."""
