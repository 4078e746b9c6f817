"""Streaming early warning of sheet breaks: Kafka consumer, windows, scoring, alerts."""
