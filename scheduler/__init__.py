"""A Kafka-native scheduler service."""
