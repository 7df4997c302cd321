#!/usr/bin/env python3
"""Process figures from /proc, summed over the given PIDs.

  proc.py cpu PID...   CPU seconds (utime+stime / CLK_TCK)
  proc.py rss PID...   VmRSS in KiB
  proc.py hwm PID...   VmHWM (peak RSS) in KiB
"""
import os
import sys


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # fields 14 and 15 of stat(5); rest[0] is field 3
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    what, pids = sys.argv[1], sys.argv[2:]
    if what == "cpu":
        print(f"{sum(cpu(p) for p in pids):.3f}")
    elif what == "rss":
        print(sum(status(p, "VmRSS") for p in pids))
    elif what == "hwm":
        print(sum(status(p, "VmHWM") for p in pids))
    else:
        sys.exit(f"unknown: {what}")
