//! amqtt-bench (placeholder until the bench issue).
