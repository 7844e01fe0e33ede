"""Graph JEPA pretraining streamed from the on-disk cache: memory and time at 100k and 1.6M molecules.

Each size runs ``molwm.train.pretrain.run_pretrain`` in a fresh process (so peak
memory is that size's own), with ``configs/pretrain/small.yaml`` (GINE 4 x 128,
batch 256), one torch thread, no MLflow, for the same number of steps. Both sizes
read the *same* full MOSES cache: the smaller one is its first N rows
(``CachedGraphs(limit=N)``), so no second cache is featurized and the shards,
files and code paths are identical; only the number of molecules the per-epoch
permutation draws from differs. ``--via-limit`` runs a size as a user would
instead (``limit=N`` in the config: its own cache, featurized if missing).

Reported per size: peak RSS of the process (``ru_maxrss``), split by phase (setup:
reading the card and cache and building the model; training: the steps) and by
kind (``RssAnon``, private memory; ``RssFile``, pages of the memory-mapped shards,
which are the kernel's page cache and reclaimable), sampled every 50 ms from
``/proc/self/status``; seconds per step (training time as the loop measures it,
data loading included, health checks and checkpoints excluded; steady state from
step 20 on). With ``--epoch`` also one full epoch at the smallest size, and the
full-size epoch time projected from the measured per-step rate (projected, not run).

Never fails on a slow machine. Usage::

    MOLWM_CACHE=/tmp/bench/cache python benchmarks/streaming.py [--sizes 100000,full] [--steps 200] [--epoch]
        [--release-every N] [--via-limit] [--json out.json]

The full cache (1,584,663 molecules, ~750 MB) is made once by ``molwm data prepare moses``
(about 3 minutes on 2 cores) if the cache root does not hold it yet.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "pretrain" / "small.yaml"


def _status_kib() -> dict[str, int]:
    """Current ``VmRSS``, ``RssAnon``, ``RssFile`` and ``VmHWM`` of this process, in KiB."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


class RssSampler(threading.Thread):
    """Peak ``VmRSS`` / ``RssAnon`` / ``RssFile`` per phase, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval = interval
        self.phase = "setup"
        self.peaks: dict[str, dict[str, int]] = {}
        self.marks: dict[str, dict[str, int]] = {}
        self._halt = threading.Event()

    def sample(self) -> None:
        now = _status_kib()
        peak = self.peaks.setdefault(self.phase, {})
        for k in ("VmRSS", "RssAnon", "RssFile"):
            peak[k] = max(peak.get(k, 0), now.get(k, 0))

    def mark(self, name: str) -> None:
        """Record the current values under ``name`` and start phase ``name``."""
        self.sample()
        self.marks[name] = _status_kib()
        self.phase = name

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()


def child(spec: dict) -> dict:
    """One pretraining run in this (fresh) process; returns its figures."""
    sampler = RssSampler()
    sampler.start()
    import numpy as np

    import molwm.train.pretrain as pretrain
    from molwm.config import load_config
    from molwm.data.batch import CachedGraphs
    from molwm.tracking import NullTracker

    rows, release = spec["rows"], spec["release_every"]
    first_rows = rows if rows is not None and not spec["via_limit"] else None
    if first_rows is not None or release is not None:
        # the first `rows` molecules of the one full cache, and/or another page-release interval
        # (run_pretrain builds its data with this name; nothing else in it changes)
        class Streamed(CachedGraphs):
            def __init__(self, cache, with_labels=True):
                more = {} if release is None else {"release_every": release}
                super().__init__(cache, with_labels, limit=first_rows, **more)

        pretrain.CachedGraphs = Streamed

    class SetupMark(NullTracker):
        """run_pretrain logs its parameters once, after the data and the model are built."""

        def log_params(self, params):
            super().log_params(params)
            if "data.n_molecules" in params:
                sampler.mark("train")

    limit = rows if spec["via_limit"] else None
    overrides = [f"limit={'null' if limit is None else limit}", "threads=1", f"out_dir={spec['out_dir']}",
                 f"health_every={spec['health_every']}", f"checkpoint_every={spec['checkpoint_every']}",
                 "log_every=10", *spec["overrides"]]
    if spec["steps"]:
        overrides.append(f"max_steps={spec['steps']}")
    else:
        overrides.append("epochs=1")
    config = load_config(pretrain.PretrainConfig, CONFIG, overrides)
    tracker = SetupMark()
    t0 = time.perf_counter()
    result = pretrain.run_pretrain(config, tracker, progress=False)
    wall = time.perf_counter() - t0
    sampler.stop()
    n = int(tracker.params["data.n_molecules"])
    wall_pts = dict(result.history["wall_seconds"])  # step -> training seconds so far
    last = max(wall_pts)
    first = min((s for s in wall_pts if s >= 19), default=min(wall_pts))
    steady = (wall_pts[last] - wall_pts[first]) / max(1, last - first)
    import inspect

    default_release = inspect.signature(CachedGraphs).parameters["release_every"].default
    return {
        "molecules": n,
        "via_limit": spec["via_limit"],
        "release_every": default_release if release is None else release,
        "steps": result.steps,
        "steps_per_epoch": max(1, n // config.batch_size),
        "batch_size": config.batch_size,
        "train_s": wall_pts[last],
        "s_per_step": wall_pts[last] / (last + 1),
        "s_per_step_steady": steady,
        "process_wall_s": wall,
        "final_loss": result.final_loss,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peaks_mib": {ph: {k: v / 1024 for k, v in p.items()} for ph, p in sampler.peaks.items()},
        "at_train_start_mib": {k: v / 1024 for k, v in sampler.marks.get("train", {}).items()},
        "permutation_mib": np.dtype(np.int64).itemsize * n / 2**20,  # PretrainData's per-epoch order
    }


def run_size(label: str, rows: int | None, steps: int | None, args, out_dir: Path) -> dict:
    spec = {"rows": rows, "steps": steps, "via_limit": args.via_limit, "release_every": args.release_every,
            "out_dir": str(out_dir / label),
            "health_every": args.health_every, "checkpoint_every": args.checkpoint_every,
            "overrides": args.overrides}
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env)
    if proc.returncode:
        return {"label": label, "error": proc.stderr[-2000:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["label"] = label
    return out


def ensure_full_cache(cache_dir: str | None) -> int:
    """Featurize all of MOSES into the cache root unless it is there already; its size."""
    from molwm.data.prepare import PrepareConfig, prepare_dataset

    t0 = time.perf_counter()
    prep = prepare_dataset(PrepareConfig(dataset="moses", cache_dir=cache_dir, progress=False))
    how = "cache hit" if prep.cache_hit else f"featurized in {time.perf_counter() - t0:.0f} s"
    print(f"full MOSES cache: {len(prep.cache):,} molecules, {len(prep.cache.shard_names)} shards, "
          f"{prep.cache.disk_bytes() / 2**20:,.0f} MiB on disk ({how}): {prep.cache.path}", flush=True)
    return len(prep.cache)


def _fmt_row(r: dict) -> str:
    tr, st = r["peaks_mib"].get("train", {}), r["peaks_mib"].get("setup", {})
    return (f"| {r['molecules']:,} | {r['steps']} | {r['s_per_step_steady']:.3f} | {r['s_per_step']:.3f} | "
            f"{r['ru_maxrss_mib']:,.0f} | {st.get('VmRSS', 0):,.0f} | {tr.get('VmRSS', 0):,.0f} | "
            f"{tr.get('RssAnon', 0):,.0f} | {tr.get('RssFile', 0):,.0f} | {r['permutation_mib']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,full", help="molecules per run; 'full' = the whole cache")
    parser.add_argument("--steps", type=int, default=200, help="steps per size (the same for every size)")
    parser.add_argument("--epoch", action="store_true", help="also one full epoch at the smallest size")
    parser.add_argument("--via-limit", action="store_true",
                        help="pass limit=N to the config (own cache) instead of the first N rows of the full cache")
    parser.add_argument("--release-every", type=int, default=None,
                        help="CachedGraphs release_every (batches between unmapping shard pages; 0: never); "
                             "default: CachedGraphs' own")
    parser.add_argument("--health-every", type=int, default=100)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--cache-dir", default=None, help="cache root (default $MOLWM_CACHE)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="extra PretrainConfig overrides, e.g. batch_size=128")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.cache_dir:
        os.environ["MOLWM_CACHE"] = args.cache_dir
        args.overrides.append(f"cache_dir={args.cache_dir}")
    n_full = ensure_full_cache(args.cache_dir) if not args.via_limit or "full" in args.sizes else None
    sizes = [(s, None if s == "full" else int(s)) for s in (x.strip() for x in args.sizes.split(","))]
    rows = []
    with tempfile.TemporaryDirectory(prefix="molwm-stream-") as d:
        for label, n in sizes:
            rows.append(run_size(label, n, args.steps, args, Path(d)))
            print(f"done: {json.dumps(rows[-1])}", flush=True)
        epoch = None
        if args.epoch:
            label, n = sizes[0]
            epoch = run_size(f"{label}-epoch", n, None, args, Path(d))
            print(f"done: {json.dumps(epoch)}", flush=True)
    ok = [r for r in rows if "error" not in r]
    for r in rows:
        if "error" in r:
            print(f"{r['label']} failed:\n{r['error']}")
    print()
    print(f"cores: {len(os.sched_getaffinity(0))}, torch threads 1, config {CONFIG.relative_to(ROOT)}, "
          f"{'limit=N (own cache)' if args.via_limit else 'first N rows of the full cache'}, "
          f"release_every {ok[0]['release_every'] if ok else '?'}")
    print("| molecules | steps | s/step (steady) | s/step (all) | peak RSS MiB (ru_maxrss) | setup peak | "
          "training peak | training RssAnon | training RssFile | permutation MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in ok:
        print(_fmt_row(r))
    if len(ok) >= 2:
        a, b = ok[0], ok[-1]
        ta, tb = a["peaks_mib"]["train"], b["peaks_mib"]["train"]
        print(f"\nsize ratio {b['molecules'] / a['molecules']:.1f}x:")
        print(f"  peak RSS (ru_maxrss) ratio          {b['ru_maxrss_mib'] / a['ru_maxrss_mib']:.2f}")
        print(f"  training-phase RSS ratio            {tb['VmRSS'] / ta['VmRSS']:.2f}")
        print(f"  training-phase RssAnon ratio        {tb['RssAnon'] / ta['RssAnon']:.2f} "
              f"({tb['RssAnon'] - ta['RssAnon']:+.0f} MiB; permutation accounts for "
              f"{b['permutation_mib'] - a['permutation_mib']:+.1f} MiB)")
        print(f"  training-phase RssFile (mapped shard pages) {ta['RssFile']:.0f} -> {tb['RssFile']:.0f} MiB")
        print(f"  s/step ratio (steady)               {b['s_per_step_steady'] / a['s_per_step_steady']:.2f}")
        big = b
        proj = big["steps_per_epoch"] * big["s_per_step_steady"]
        print(f"  projected full epoch at {big['molecules']:,}: {big['steps_per_epoch']:,} steps x "
              f"{big['s_per_step_steady']:.3f} s = {proj / 60:.1f} min (projected from the measured rate, not run)")
    if epoch is not None and "error" not in epoch:
        print(f"\nfull epoch at {epoch['molecules']:,}: {epoch['steps']} steps, {epoch['train_s']:.0f} s training "
              f"({epoch['s_per_step']:.3f} s/step; process {epoch['process_wall_s']:.0f} s), "
              f"peak RSS {epoch['ru_maxrss_mib']:,.0f} MiB")
        if len(ok) >= 2:
            big = ok[-1]
            proj = big["steps_per_epoch"] * big["s_per_step_steady"]
            print(f"projected epoch {big['molecules']:,} / measured epoch {epoch['molecules']:,}: "
                  f"{proj / epoch['train_s']:.1f}x for {big['molecules'] / epoch['molecules']:.1f}x the molecules")
    elif epoch is not None:
        print(f"epoch run failed:\n{epoch['error']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"sizes": rows, "epoch": epoch, "full_cache": n_full}, indent=1))


if __name__ == "__main__":
    main()
