#!/bin/bash
# Stage 2: PID 1 in the DAX guest, on an overlay of the host root (read-only 9p + tmpfs).
# Sets up pmem (fsdax for ext4 and xfs on the two memmap= e820 regions, devdax on the QEMU
# nvdimm region), makes the unpacked guest kernel's modules and headers visible where bcc
# looks, runs pytest on tests/dax/guest, writes everything to /out (9p share), powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
# no tmpfs on /tmp: the overlay root is writable already, and a tmpfs there would hide a
# checkout (and its kernel cache) that lives under the host's /tmp, as CI's clone may
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mkdir -p /out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out /out || echo "PMEMTRACE-DAX: /out 9p mount failed"
. /out/config.env   # CHECKOUT PYTHON KVER KROOT GUEST_PYTEST_ARGS (written by the host)

up() { cut -d' ' -f1 /proc/uptime; }
step() { echo "=== [t=$(up)s] $*"; }
# "KEY VALUE" lines the in-guest tests read (tests/dax/guest/conftest.py)
setup_line() { echo "$1 $2" >> /run/pmemtrace-dax.setup; }

region_of_provider() {   # e820 | ACPI.NFIT -> region names, sorted
  for r in /sys/bus/nd/devices/region*; do
    bus=$(basename "$(dirname "$(readlink -f "$r")")")
    [ "$(cat /sys/bus/nd/devices/$bus/provider 2>/dev/null)" = "$1" ] && basename "$r"
  done | sort -V
}

kernel_tree() {
  step "guest kernel tree: modules and headers of $KVER from $KROOT"
  ln -sfn "$KROOT/lib/modules/$KVER" /lib/modules/$KVER
  for d in "$KROOT"/usr/src/*; do ln -sfn "$d" /usr/src/; done
  for d in "$KROOT"/usr/lib/linux-kbuild-*; do [ -e "$d" ] && ln -sfn "$d" /usr/lib/; done
  ls -l /lib/modules/$KVER/build
  ls /lib/modules/$KVER/build/include >/dev/null && setup_line headers /lib/modules/$KVER/build
}

pmem() {
  step "pmem regions"
  grep -i persistent /proc/iomem
  ndctl list -R
  local n=0 r ns dev
  for r in $(region_of_provider e820); do
    fs=$([ $n = 0 ] && echo ext4 || echo xfs); n=$((n+1))
    ns=$(ls -d /sys/bus/nd/devices/$r/namespace*.0 | head -1); ns=$(basename $ns)
    step "fsdax on $r ($ns) for $fs"
    ndctl create-namespace -f -e $ns -m fsdax -a 2M > /run/ns-$fs.json || { echo "create-namespace $fs failed"; continue; }
    cat /run/ns-$fs.json
    dev=/dev/$(tr -d ' \n' < /run/ns-$fs.json | sed -n 's/.*"blockdev":"\([^"]*\)".*/\1/p')
    for i in $(seq 50); do [ -b $dev ] && break; sleep 0.1; done
    mkdir -p /mnt/$fs
    if [ $fs = ext4 ]; then
      mkfs.ext4 -q -F -b 4096 -E stride=512,stripe_width=512 $dev
    else   # xfsprogs 6.1 wants a >=64MB log on a >=300MB fs; reflink off for DAX
      mkfs.xfs -q -f -m reflink=0 -d su=2m,sw=1 -l size=64m $dev
    fi || { echo "mkfs $fs failed"; continue; }
    mount -t $fs -o dax $dev /mnt/$fs || { echo "mount -o dax $fs failed"; continue; }
    [ $fs = xfs ] && xfs_io -c "extsize 2m" /mnt/$fs
    grep " /mnt/$fs " /proc/mounts
    setup_line fsdax-$fs "$dev /mnt/$fs"
  done
  for r in $(region_of_provider ACPI.NFIT); do
    ns=$(ls -d /sys/bus/nd/devices/$r/namespace*.0 | head -1); ns=$(basename $ns)
    step "devdax on $r ($ns)"
    ndctl create-namespace -f -e $ns -m devdax -a 2M | tee /run/ns-devdax.json
    dev=/dev/$(tr -d ' \n' < /run/ns-devdax.json | sed -n 's/.*"chardev":"\([^"]*\)".*/\1/p')
    for i in $(seq 50); do [ -c $dev ] && break; sleep 0.1; done
    ls -l $dev && setup_line devdax $dev
    break
  done
}

main() {
  step "stage2: kernel $(uname -r); cmdline: $(cat /proc/cmdline)"
  : > /run/pmemtrace-dax.setup
  kernel_tree
  pmem
  step "setup:"; cat /run/pmemtrace-dax.setup
  cp /run/pmemtrace-dax.setup /out/setup.txt
  step "pytest in the guest"
  cd "$CHECKOUT"
  PMEMTRACE_IN_GUEST=1 PMEMTRACE_DAX_SETUP=/run/pmemtrace-dax.setup PMEMTRACE_DAX_RESULTS=/out/results.json \
  PYTHONPATH="$CHECKOUT" PYTHONDONTWRITEBYTECODE=1 \
    "$PYTHON" -m pytest -p no:cacheprovider -o addopts= -rA -v tests/dax/guest $GUEST_PYTEST_ARGS \
    > /out/pytest.log 2>&1
  rc=$?
  tail -n 30 /out/pytest.log
  echo "$rc" > /out/pytest.rc
  step "done (pytest rc=$rc)"
}

main 2>&1 | tee /out/guest.log
echo "PMEMTRACE-DAX-GUEST-END uptime=$(up)"
sync; umount /out 2>/dev/null
poweroff -f || echo o > /proc/sysrq-trigger
