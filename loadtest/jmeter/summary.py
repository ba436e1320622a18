#!/usr/bin/env python3
"""Per-sampler count, throughput and latency percentiles of a JMeter CSV
results file (the jmeter-maven-plugin's), as a Markdown table."""
import csv
import sys


def pct(values, q):
    if not values:
        return 0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main(path):
    rows = list(csv.DictReader(open(path, newline="")))
    by = {}
    for r in rows:
        by.setdefault(r["label"], []).append(r)
    start = min(int(r["timeStamp"]) for r in rows)
    print(f"| sampler | n | errors | codes | p50 ms | p95 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for label, rs in by.items():
        elapsed = [int(r["elapsed"]) for r in rs]
        errors = sum(1 for r in rs if r["success"] != "true")
        codes = {}
        for r in rs:
            codes[r["responseCode"]] = codes.get(r["responseCode"], 0) + 1
        print(f"| {label} | {len(rs)} | {errors} | {codes} | {pct(elapsed, .5)} | {pct(elapsed, .95)} | {pct(elapsed, .99)} |")
    joins = [r for r in by.get("join", [])]
    holds = [r for r in by.get("hold", []) if r["responseCode"] == "201"]
    if joins:
        t0 = min(int(r["timeStamp"]) for r in joins)
        t1 = max(int(r["timeStamp"]) + int(r["elapsed"]) for r in joins)
        print(f"\njoins/s {len(joins) / max(t1 - t0, 1) * 1000:.0f}")
    if holds and joins:
        end = max(int(r["timeStamp"]) + int(r["elapsed"]) for r in rows)
        print(f"successful holds {len(holds)}, holds/s {len(holds) / max(end - t0, 1) * 1000:.0f}, "
              f"last hold at +{(max(int(r['timeStamp']) + int(r['elapsed']) for r in holds) - t0) / 1000:.2f}s")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        main(p)
