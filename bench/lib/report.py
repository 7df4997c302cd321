#!/usr/bin/env python3
"""Turns bench/run's results.tsv (round, workload, side, metric, value, ok) into the table.

Medians and min–max over rounds per side, the ratio iap-proxy / nginx of the medians, and
the target check. A run that failed (non-2xx or socket errors over 0.1 %, or a wrong body
size) is never counted as fast: the row says FAILED and its target is not met.
"""
import statistics
import sys
from collections import defaultdict

# (workload, metric, unit, scale, target) — target: (kind, bound)
#   ("ratio>=", x): iap/nginx median ratio at least x;  ("ratio<=", x): at most x
#   ("abs<=", x): iap-proxy's median at most x (in the printed unit)
#   ("added", None): iap-proxy's added p50 at most nginx's
ROWS = [
    ("rps_small", "rps", "req/s", 1, ("ratio>=", 1.1)),
    ("rps_small", "p50", "µs", 1, None),
    ("rps_small", "p99", "µs", 1, None),
    ("cpu", "cpu_per_100k", "CPU s / 100k req", 1, ("ratio<=", 0.8)),
    ("cpu", "cpu_util", "% of one core", 1, None),
    ("latency_light", "p50", "µs", 1, ("ratio<=", 1.0)),
    ("latency_light", "p99", "µs", 1, ("ratio<=", 1.0)),
    ("latency_light", "added_p50", "µs over direct", 1, None),
    ("churn", "rps", "req/s", 1, ("ratio>=", 1.1)),
    ("big", "mbps", "MB/s", 1, ("ratio>=", 1.2)),
    ("big", "peak_rss", "MiB peak RSS", 1 / 1024, None),
    ("idle", "rss", "MiB RSS", 1 / 1024, ("abs<=", 8)),
    ("round", "peak_rss", "MiB VmHWM at the round's end", 1 / 1024, ("abs<=", 16)),
]


def load(path):
    runs = defaultdict(list)  # (workload, side, metric) -> [(round, value, ok)]
    with open(path) as f:
        for line in f:
            rnd, wl, side, metric, value, ok = line.rstrip("\n").split("\t")
            runs[(wl, side, metric)].append((int(rnd), float(value), ok == "1"))
    # latency each hop adds: p50 through the proxy minus p50 direct, in the same round
    direct = {r: (v, ok) for r, v, ok in runs.get(("latency_light", "direct", "p50"), [])}
    for side in ("iap-proxy", ANCHOR):
        for r, v, ok in runs.get(("latency_light", side, "p50"), []):
            if r in direct:
                d, dok = direct[r]
                runs[("latency_light", side, "added_p50")].append((r, v - d, ok and dok))
    return runs


def fmt(x):
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"


def cell(samples, scale):
    if not samples:
        return None, "-"
    good = [v * scale for _, v, ok in samples if ok]
    failed = sum(1 for _, _, ok in samples if not ok)
    if not good:
        return None, f"FAILED {failed}/{len(samples)}"
    med = statistics.median(good)
    text = f"{fmt(med)} ({fmt(min(good))}–{fmt(max(good))})"
    if failed:
        text = f"FAILED {failed}/{len(samples)}; ok: {text}"
        return None, text
    return med, text


def main(path, anchor):
    runs = load(path)
    print(f"| workload | metric | iap-proxy median (min–max) | {anchor} median (min–max) "
          f"| direct | iap/{anchor} | target | met |")
    print("|---|---|---|---|---|---|---|---|")
    met_all = True
    for wl, metric, unit, scale, target in ROWS:
        iap, iap_t = cell(runs.get((wl, "iap-proxy", metric), []), scale)
        ngx, ngx_t = cell(runs.get((wl, anchor, metric), []), scale)
        _, dir_t = cell(runs.get((wl, "direct", metric), []), scale)
        ratio = iap / ngx if iap is not None and ngx not in (None, 0) else None
        ratio_t = f"{ratio:.2f}×" if ratio is not None else "-"
        goal, met = "", ""
        if target:
            kind, bound = target
            if kind == "ratio>=":
                goal, ok = f"≥ {bound}×", ratio is not None and ratio >= bound
            elif kind == "ratio<=":
                goal, ok = f"≤ {bound}×", ratio is not None and ratio <= bound
            elif kind == "abs<=":
                goal, ok = f"≤ {bound}", iap is not None and iap <= bound
            else:
                goal, ok = "≤ nginx", iap is not None and ngx is not None and iap <= ngx
            met = "yes" if ok else "**no**"
            met_all &= ok
        print(f"| {wl} | {metric} ({unit}) | {iap_t} | {ngx_t} | {dir_t} | {ratio_t} | {goal} | {met} |")
    return met_all


ANCHOR = sys.argv[2] if len(sys.argv) > 2 else "nginx"

if __name__ == "__main__":
    ok = main(sys.argv[1], ANCHOR)
    print()
    print("all targets met" if ok else "some targets NOT met (see the `met` column)")
