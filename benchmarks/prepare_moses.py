"""Time, peak memory and disk size of ``molwm data prepare moses`` at several sizes.

Each size runs as a fresh ``molwm`` process (so peak RSS is that run's own) into a
temporary cache, without MLflow tracking. Prints a table; never fails on a slow
machine. Usage::

    python benchmarks/prepare_moses.py [--limits 100000,full] [--n-jobs 0]

``full`` means all 1,584,663 molecules (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_one(limit: str, n_jobs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="molwm-bench-") as cache:
        cmd = [sys.executable, "-m", "molwm", "data", "prepare", "moses", "--no-track", "--no-progress",
               "--cache-dir", cache, "--n-jobs", str(n_jobs)]
        if limit != "full":
            cmd += ["--limit", limit]
        # the parent's own peak is irrelevant; children's ru_maxrss is the largest child process
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        manifest = json.loads(next(Path(cache).glob("moses/*/manifest.json")).read_text())
        disk = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file())
        rate = re.search(r"featurized at ([\d,]+) mol/s", proc.stdout)
    return {
        "limit": limit,
        "n_ok": manifest["n_ok"],
        "n_rejected": manifest["n_rejected"],
        "wall_s": wall,
        "featurize_s": manifest["featurize_seconds"],
        "mol_per_s": rate.group(1) if rate else "?",
        "peak_rss_mib": max(peak_kib, before) / 1024,
        "disk_mib": disk / 2**20,
        "shards": len(manifest["shards"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limits", default="100000,full")
    parser.add_argument("--n-jobs", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for limit in args.limits.split(","):
        rows.append(run_one(limit.strip(), args.n_jobs))
        print(f"done: {rows[-1]}", flush=True)
    print()
    print(f"cores: {len(os.sched_getaffinity(0))}, n_jobs={args.n_jobs}")
    print("| molecules | featurized | rejected | wall s | featurize s | mol/s | peak RSS MiB* | disk MiB | shards |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['limit']} | {r['n_ok']:,} | {r['n_rejected']} | {r['wall_s']:.1f} | {r['featurize_s']:.1f} | "
              f"{r['mol_per_s']} | {r['peak_rss_mib']:.0f} | {r['disk_mib']:.0f} | {r['shards']} |")
    print("* largest single process (main or worker), cumulative max over the runs so far")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"time ratio {b['featurize_s'] / a['featurize_s']:.1f} for size ratio {b['n_ok'] / a['n_ok']:.1f}")


if __name__ == "__main__":
    main()
