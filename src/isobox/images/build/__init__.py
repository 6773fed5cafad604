"""`isobox build`: Containerfile parsing, .dockerignore matching and image-config updates."""
