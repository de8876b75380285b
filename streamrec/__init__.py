"""StreamRec: a streaming recommendation platform on Kafka."""

__version__ = "0.1.0"
