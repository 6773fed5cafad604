"""The engine: instances (containers and VMs), their lifecycle, and the image builder's hook."""
