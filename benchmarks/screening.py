"""Screening at scale, side by side: ``molwm query`` single-process against ``--engine ray``, a killed Ray job
resumed, and the vector index on the MOSES embeddings.

Stages (all by default, each reading what the earlier ones wrote under ``--out``):

* ``prepare``: the 1,584,663 MOSES molecules (read from the ``molsets`` package file through the ``moses``
  card) as one Parquet file of ``smiles``, ``id``.
* ``query``: ``molwm query --what embed`` over it single-process (default ``--workers 1``: one featurizer
  process ahead of one encoder thread, so two cores) and with ``--engine ray --workers 2 --threads 1`` (two
  workers of one thread), each a fresh process; molecules/s of the query loop and of the whole command,
  peak memory (the single process; each Ray worker, early and late in the run, from the manifest), and
  rows conserved (every input row once, same ids and statuses as the single-process output, embeddings
  compared).
* ``kill``: the Ray job again into a new folder, killed (SIGKILL to its process group) once ``--kill-at``
  of the shards are complete, then rerun with the same command; every shard compared with the
  uninterrupted run's, byte for byte.
* ``index``: ``molwm index build`` from the Ray job's embeddings (no re-embedding) with FAISS HNSW and
  usearch HNSW: build time, recall@10 against exact search, the time of 1,000 molecules' neighbours after
  loading, and exact search's time for the same queries.

Never fails on a slow machine; prints figures and ratios. Usage::

    python benchmarks/screening.py [--out outputs/bench/screening] [--stages prepare,query,kill,index]
        [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MOLWM = [sys.executable, "-m", "molwm"]


def prepare(out: Path, limit: int | None) -> Path:
    import pandas as pd

    from molwm.data.registry import get_card
    from molwm.data.sources import load_table

    path = out / "moses.parquet"
    if not path.is_file():
        frame = load_table(get_card("moses"), limit=limit).frame
        pd.DataFrame({"smiles": frame["smiles"].astype(str), "id": np.arange(len(frame)).astype(str)}
                     ).to_parquet(path, index=False)
    return path


def timed(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` (a fresh process), its wall time, peak RSS of its largest waited-for process, stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=fh, text=True, env=env)
    wall = time.perf_counter() - t0
    (log.with_suffix(".out")).write_text(proc.stdout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed; see {log}")
    rate = re.search(r"\(([\d,]+) molecules/s\)", proc.stdout)
    return {"wall_s": wall, "loop_rate": float(rate.group(1).replace(",", "")) if rate else float("nan"),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "stdout": proc.stdout}


def ray_cmd(src: Path, dest: Path) -> list[str]:
    return MOLWM + ["query", "--model", "molwm:base", "--input", str(src), "--what", "embed", "--output", str(dest),
                    "--engine", "ray", "--workers", "2", "--threads", "1", "--no-progress", "--no-track"]


def worker_memory(folder: Path) -> dict:
    """Per worker: peak RSS (MiB) after its first shard, at the middle of its shards, after its last."""
    shards = json.loads((folder / "manifest.json").read_text())["shards"]
    by_worker: dict[int, list] = {}
    for name in sorted(shards):
        by_worker.setdefault(shards[name]["worker"], []).append(shards[name]["peak_rss_mib"])
    return {str(pid): {"shards": len(p), "first": p[0], "middle": p[len(p) // 2], "last": p[-1]}
            for pid, p in by_worker.items()}


def stage_query(out: Path, src: Path) -> dict:
    import pyarrow.parquet as pq

    from molwm.screening.shards import read_shards

    res = {}
    local = out / "local.parquet"
    res["local"] = timed(MOLWM + ["query", "--model", "molwm:base", "--input", str(src), "--what", "embed",
                                  "--output", str(local), "--no-progress"], out / "local.log")
    ray_out = out / "ray"
    if ray_out.exists():
        subprocess.run(["rm", "-rf", str(ray_out)], check=True)
    res["ray"] = timed(ray_cmd(src, ray_out), out / "ray.log")
    res["ray"]["workers"] = worker_memory(ray_out)
    n_in = pq.ParquetFile(src).metadata.num_rows
    a = pq.read_table(local, columns=["row", "id", "status"]).to_pandas()
    b = read_shards(ray_out, columns=["row", "id", "status"])
    res["rows"] = {"input": n_in, "single": len(a), "ray": len(b), "ray_unique_rows": int(b["row"].nunique()),
                   "ray_rows_are_input_order": bool((b["row"].to_numpy() == np.arange(n_in)).all()),
                   "same_ids_and_status": bool(a["id"].equals(b["id"]) and a["status"].equals(b["status"]))}
    diff = 0.0
    cols = [f"emb_{i}" for i in range(128)]
    pf = pq.ParquetFile(local)
    start = 0
    for batch in pf.iter_batches(batch_size=100_000, columns=cols):
        x = np.stack([batch.column(c).to_numpy() for c in cols], axis=1)
        y = read_slice(ray_out, start, start + len(x), cols)
        diff = max(diff, float(np.nanmax(np.abs(x - y))))
        start += len(x)
    res["rows"]["max_abs_embedding_diff"] = diff
    for key in ("local", "ray"):
        res[key].pop("stdout")
    return res


def read_slice(folder: Path, start: int, stop: int, cols: list[str]) -> np.ndarray:
    """Rows ``start:stop`` of a Ray job's shards (10,000-row blocks of one input)."""
    import pyarrow.parquet as pq

    shards = sorted(json.loads((folder / "manifest.json").read_text())["shards"].items())
    parts = []
    for name, rec in shards:
        if rec["last_row"] < start or rec["first_row"] >= stop:
            continue
        t = pq.read_table(folder / name, columns=cols)
        x = np.stack([t.column(c).to_numpy() for c in cols], axis=1)
        lo, hi = max(start - rec["first_row"], 0), min(stop, rec["last_row"] + 1) - rec["first_row"]
        parts.append(x[lo:hi])
    return np.concatenate(parts)


def stage_kill(out: Path, src: Path, kill_at: float) -> dict:
    dest = out / "ray_killed"
    if dest.exists():
        subprocess.run(["rm", "-rf", str(dest)], check=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(out / "ray_killed.log", "w")
    proc = subprocess.Popen(ray_cmd(src, dest), stdout=log, stderr=log, env=env, start_new_session=True)
    import pyarrow.parquet as pq

    total = -(-pq.ParquetFile(src).metadata.num_rows // 10_000)  # shards of the default --chunk-size
    done = 0
    while proc.poll() is None:
        time.sleep(1)
        try:
            done = len(json.loads((dest / "manifest.json").read_text())["shards"])
        except (OSError, ValueError):
            continue
        if done >= kill_at * total:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    time.sleep(5)
    leftovers = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
    rerun = timed(ray_cmd(src, dest), out / "ray_resumed.log")
    same_bytes = same_rows = 0
    names = sorted(json.loads((out / "ray" / "manifest.json").read_text())["shards"])
    for name in names:
        a, b = (out / "ray" / name).read_bytes(), (dest / name).read_bytes()
        same_bytes += a == b
    for name in names:
        same_rows += pq.read_table(out / "ray" / name).equals(pq.read_table(dest / name))
    return {"killed_after_shards": done, "shards": len(names), "leftover_processes": len(leftovers),
            "rerun_stdout": rerun["stdout"].strip(), "rerun_wall_s": rerun["wall_s"],
            "shards_byte_identical": same_bytes, "shards_table_equal": same_rows}


def stage_index(out: Path) -> dict:
    from molwm.query import MoleculeModel
    from molwm.screening.build import reference_from_shards
    from molwm.screening.index import ExactSearch, load_index, write_index

    wm = MoleculeModel.load("molwm:base")
    ref = reference_from_shards(out / "ray", wm)
    res = {"n": len(ref)}
    rng = np.random.default_rng(7)
    queries = ref.unit[rng.choice(len(ref), 1000, replace=False)]
    t = time.perf_counter()
    ExactSearch(ref.unit).search(queries, 10)
    res["exact_1000_s"] = time.perf_counter() - t
    for backend in ("faiss-hnsw", "usearch"):
        folder = out / f"index-{backend}"
        meta = write_index(folder, ref, wm, backend)
        t = time.perf_counter()
        loaded = load_index(folder, wm)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        loaded.search(queries, 10)
        res[backend] = {"build_s": meta["build_seconds"], "recall_at_10": meta["recall_at_10"], "load_s": load_s,
                        "query_1000_s": time.perf_counter() - t, "settings": meta["settings"],
                        "disk_mib": sum(f.stat().st_size for f in folder.iterdir()) / 2**20}
        print(f"{backend}: {res[backend]}", flush=True)
    return res


def report(res: dict) -> None:
    if "query" in res:
        q = res["query"]
        lo, ra = q["local"], q["ray"]
        print(f"single-process: {lo['loop_rate']:,.0f} molecules/s (query loop), wall {lo['wall_s']:.0f} s, "
              f"peak RSS {lo['peak_rss_mib']:.0f} MiB")
        print(f"ray 2x1: {ra['loop_rate']:,.0f} molecules/s (query loop), wall {ra['wall_s']:.0f} s")
        print(f"ratio ray/single: loop {ra['loop_rate'] / lo['loop_rate']:.3f}, wall {lo['wall_s'] / ra['wall_s']:.3f}")
        print(f"worker peak RSS MiB (first / middle / last shard): {ra['workers']}")
        print(f"rows: {q['rows']}")
    if "kill" in res:
        print(f"kill and resume: {res['kill']}")
    if "index" in res:
        print(f"index: {res['index']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/bench/screening")
    parser.add_argument("--stages", default="prepare,query,kill,index")
    parser.add_argument("--limit", type=int, default=None, help="first N MOSES molecules (default: all)")
    parser.add_argument("--kill-at", type=float, default=0.4, help="fraction of shards done before the kill")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    res = json.loads(results_file.read_text()) if results_file.is_file() else {}
    stages = args.stages.split(",")
    src = prepare(out, args.limit)
    print(f"cores: {len(os.sched_getaffinity(0))}, input {src}", flush=True)
    for stage in stages:
        t = time.perf_counter()
        if stage == "query":
            res["query"] = stage_query(out, src)
        elif stage == "kill":
            res["kill"] = stage_kill(out, src, args.kill_at)
        elif stage == "index":
            res["index"] = stage_index(out)
        elif stage != "prepare":
            raise SystemExit(f"unknown stage {stage}")
        results_file.write_text(json.dumps(res, indent=1, default=str))
        print(f"stage {stage} done in {time.perf_counter() - t:.0f} s", flush=True)
    report(res)


if __name__ == "__main__":
    main()
