"""The VM tier: QEMU micro-VMs booting Debian's kernel with an isobox-built initramfs."""
