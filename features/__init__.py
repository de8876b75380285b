"""User and item features: pure feature logic, Feast rows, and the online reader API."""
