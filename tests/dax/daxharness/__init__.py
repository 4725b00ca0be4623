"""Host-side DAX guest harness: kernels (fetch/cache), initramfs, vm (boot and collect)."""

# in-guest test ids (relative to tests/dax/guest/) as collected on the host this session
GUEST_IDS = []
