"""The pipeline as stages behind a transport (DESIGN §2): the same stage objects run embedded (in-process
queues, torch backend) and as services (Redis Streams / Kafka, Triton backend)."""
