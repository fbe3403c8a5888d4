"""The clients that deliver a firing to its target: REST, Kafka and Redis (``executors``),
with our own HTTP/1.1 client for REST (``http1``)."""
