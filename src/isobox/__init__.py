"""isobox: isolated workloads on Linux, as containers or virtual machines."""

__version__ = "0.1.0"
