"""Workloads and load scenarios that drive the platform: for the benchmarks, the demo and users."""
