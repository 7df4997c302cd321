#!/usr/bin/env python3
"""Parses `wrk --latency` output into `requests rps p50_us p99_us bad` (bad = non-2xx/3xx
responses + socket errors)."""
import re
import sys

UNITS = {"us": 1.0, "ms": 1000.0, "s": 1e6, "m": 60e6}


def dur(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def parse(out):
    req = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    bad = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        bad += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        bad += sum(int(g) for g in m.groups())
    if not (req and rps and p50 and p99):
        return None
    return int(req.group(1)), float(rps.group(1)), dur(p50.group(1)), dur(p99.group(1)), bad


if __name__ == "__main__":
    r = parse(open(sys.argv[1]).read())
    print("0 0 0 0 1" if r is None else "%d %.1f %.1f %.1f %d" % r)
