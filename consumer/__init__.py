"""OmniSink: the daemon that moves OmniNode platform events from Kafka into PostgreSQL."""

__version__ = "0.1.0"
