#!/usr/bin/env python3
"""The latency of one synced spool-sized write on this machine, alone and beside busy CPUs.

What the collector's spool does for every commit group with `--durability fsync`: write a few
kB over zeros already on disk, then `fdatasync`. This probe does the same in a loop on a file
in DIR (default: a temporary directory under /tmp, the filesystem `veil-load` puts its spools
and ClickHouse on) for SECS seconds per case, and prints p50/p99/max per case:

- quiet: nothing else running;
- one busy task (a loop that never sleeps) pinned to each CPU in turn, at nice 0 and 19;
- every CPU busy at nice 19.

On a VM, a synced write waits for the disk's completion interrupts; the CPU that takes them is
the one `/proc/interrupts` shows counting for the disk's queue. benches/README ("the spool's
commits") has what this printed on the project's 2-core machines and what it means for
`veil-load --open-loop-at`.

Usage: python3 benches/fsync_latency.py [SECS] [DIR]
"""

import os
import subprocess
import sys
import tempfile
import time

SPIN = "while True: pass"


def measure(fd, secs):
    lat = []
    buf = b"x" * 3000
    size = 8 << 20
    off = 0
    end = time.monotonic() + secs
    while time.monotonic() < end:
        t = time.perf_counter()
        os.pwrite(fd, buf, off)
        os.fdatasync(fd)
        lat.append((time.perf_counter() - t) * 1e3)
        off = (off + len(buf)) % (size - len(buf))
    lat.sort()
    n = len(lat)
    return n, lat[n // 2], lat[min(n - 1, int(n * 0.99))], lat[-1]


def spinners(cpus, nice):
    procs = []
    for cpu in cpus:
        cmd = ["nice", "-n", str(nice)]
        if cpu is not None:
            cmd += ["taskset", "-c", str(cpu)]
        procs.append(subprocess.Popen(cmd + [sys.executable, "-c", SPIN]))
    time.sleep(0.3)
    return procs


def main():
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    base = sys.argv[2] if len(sys.argv) > 2 else None
    ncpu = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=base) as d:
        fd = os.open(os.path.join(d, "segment"), os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(fd, b"\0" * (8 << 20), 0)
        os.fdatasync(fd)
        cases = [("quiet", [], 0)]
        for cpu in range(ncpu):
            for nice in (0, 19):
                cases.append((f"busy cpu{cpu}, nice {nice}", [cpu], nice))
        cases.append((f"all {ncpu} cpus busy, nice 19", [None] * ncpu, 19))
        print(f"{'case':<28} {'writes':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for label, cpus, nice in cases:
            procs = spinners(cpus, nice)
            try:
                n, p50, p99, mx = measure(fd, secs)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            print(f"{label:<28} {n:>8} {p50:>8.3f} {p99:>8.3f} {mx:>8.2f}", flush=True)
        os.close(fd)


if __name__ == "__main__":
    main()
