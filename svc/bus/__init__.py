"""NATS JetStream: streams and consumer set-up, the event consumer loop, the firing publisher,
and the automations KV store with its watcher."""
