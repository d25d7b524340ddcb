#!/bin/sh
# The guest half of bench/overhead.py: the same script runs in the Debian primary VM
# (started by the VM's cloud-init user_data: systemd-run) and in its container in the
# standby VM (started by the container image's `cmd` beside nginx).  It sits on the
# service's data volume (/srv/data/overhead/), which the bench fills and the product
# copies to the container at recovery, so both sides run the very same file.
#
# usage: overhead-guest.sh SIDE   (SIDE: vm or ct)
#
# It starts `iperf3 -s`, writes out-SIDE/ready (the next round's number), then for
# N = that, N + 1, ... waits for the
# file go-SIDE-N (put by the bench over nginx's WebDAV /data/, one line "SIZE RUNTIME"),
# runs one round of fio (sequential write and read with 1 MiB blocks, 4 KiB random reads
# for RUNTIME seconds) on the root file system and on the data volume, writes fio's JSON
# to out-SIDE/TARGET-JOB-N.json and then out-SIDE/done-N.  Nothing else runs meanwhile:
# the bench sends HTTP and TCP load only between rounds.
set -u
side=$1
dir=/srv/data/overhead
out=$dir/out-$side
mkdir -p "$out"
chmod 0755 "$out"

{
    echo "side $side"
    echo "nproc $(nproc)"
    grep MemTotal /proc/meminfo
    echo "uname $(uname -r)"
    for p in / /srv/data; do
        echo "mount $p: $(awk -v p="$p" '$2 == p {print $1, $3, $4}' /proc/mounts | tail -1)"
    done
} >"$out/env.txt"

iperf3 -s -D --logfile "$out/iperf3.log" || echo "iperf3 -s failed" >>"$out/errors"

# Direct I/O where the file system takes it (O_DIRECT on ext4 in the VM; through
# overlayfs and a loop device in the container): probed once per target.
target_dir() {
    case $1 in
    rootfs) echo /var/tmp/vcr-overhead ;;
    volume) echo "$dir/fio-$side" ;;
    esac
}
for t in rootfs volume; do
    d=$(target_dir $t)
    mkdir -p "$d"
    if dd if=/dev/zero of="$d/probe" bs=4096 count=1 oflag=direct 2>/dev/null; then
        echo 1 >"$out/$t-direct"
    else
        echo 0 >"$out/$t-direct"
    fi
    rm -f "$d/probe"
done
# Rounds are numbered across the side's lives (the VM is restarted by each failback,
# the container at each failover): this one goes on after the last round done.
n=$(($(ls "$out" | grep -c '^done-') + 1))
echo "$n" >"$out/ready"

while :; do
    go=$dir/go-$side-$n
    while [ ! -s "$go" ]; do sleep 0.5; done
    read -r size runtime <"$go"
    for t in rootfs volume; do
        d=$(target_dir $t)
        direct=$(cat "$out/$t-direct")
        # zero_buffers: the volume is copied (gzip) at recovery; zeros keep that copy
        # small, and nothing on the way (ext4, virtio-blk, loop, qcow2 without
        # detect-zeroes) treats zeros differently.
        common="--directory=$d --filename=fio.dat --size=$size --ioengine=libaio
                --iodepth=8 --direct=$direct --zero_buffers --output-format=json"
        for job in seqwrite seqread randread; do
            case $job in
            seqwrite) args="--rw=write --bs=1M --end_fsync=1" ;;
            seqread) args="--rw=read --bs=1M" ;;
            randread) args="--rw=randread --bs=4k --time_based --runtime=$runtime" ;;
            esac
            # shellcheck disable=SC2086 # word splitting of the option lists is meant
            fio --name=$job $common $args --output="$out/$t-$job-$n.json" ||
                echo "round $n: fio $t $job failed" >>"$out/errors"
        done
        [ "$t" = volume ] && sync
    done
    echo "$n" >"$out/done-$n"
    n=$((n + 1))
done
