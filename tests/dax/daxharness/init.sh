#!/bin/sh
# Stage 1 (initramfs /init): load modules, mount the host root (9p, read-only) under a
# tmpfs overlay, switch_root into the stage-2 script given as guest_init= on the cmdline.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "pmemtrace-dax stage1: $(cat /proc/version)"
for m in $(cat /modlist); do insmod /modules/$m 2>/dev/null || echo "stage1: insmod $m failed"; done
i=0; while [ ! -e /sys/bus/virtio/drivers/9pnet_virtio ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
fail() { echo "PMEMTRACE-DAX-STAGE1-FAILED: $*"; poweroff -f; }
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /lower || fail "9p mount"
mount -t tmpfs -o size=1G tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || fail "overlay"
GI=
for x in $(cat /proc/cmdline); do case $x in guest_init=*) GI=${x#guest_init=};; esac; done
[ -n "$GI" ] || fail "no guest_init= on the kernel command line"
umount /proc /sys /dev 2>/dev/null
exec switch_root /newroot /bin/sh "$GI"
