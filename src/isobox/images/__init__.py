"""Images: content store, references, registry client, layers and the Containerfile builder."""
