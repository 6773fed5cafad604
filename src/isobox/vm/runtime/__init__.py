"""``isobox-vm-runtime``: a runc-compatible OCI runtime that runs a bundle as a micro-VM.

conmon drives it exactly as it drives ``isobox-runtime``: ``create`` starts QEMU (QEMU is "the
container process"; conmon's stdio becomes the guest workload's stdio through virtio-serial
ports), ``start`` asks the guest agent to run ``config.json``'s process, ``kill`` signals it
through the agent, ``delete`` cleans up. Design: docs/vm.md.
"""
