"""The OCI runtime behind ``isobox-runtime`` (runc-compatible)."""
