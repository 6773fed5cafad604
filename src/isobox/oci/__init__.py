"""OCI runtime-spec and image-spec data: parse and validate, never touch the system."""
