"""The domain: event models and one module per table family."""
