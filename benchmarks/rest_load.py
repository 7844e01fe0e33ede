"""Bounded loopback load on ``molwm serve``: N clients post small requests for S seconds, then stop.

A tiny FreeSolv model (``configs/finetune/tiny.yaml``: 2-member ensemble, a few
seconds to train) is fine-tuned, registered in a temporary SQLite MLflow store
and served with ``molwm serve`` on 127.0.0.1. Then ``--clients`` threads each
post ``--molecules`` MOSES molecules per request (a new connection per request,
as a plain client would; ``--timeout`` seconds per request) for ``--seconds``
seconds (``--pipe``: the server's output goes to a pipe that is never read, as
in a test harness that forgets it). Reported: requests, requests/s, p50/p99 latency, failed requests by
kind, and the server's resident memory (all its processes) before and after.

Usage::

    python benchmarks/rest_load.py [--clients 8] [--seconds 10] [--molecules 3] [--workers N] [--pipe] [--json out.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: bytes, timeout: float) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _wait_ready(port: int, server: subprocess.Popen, seconds: float = 240) -> str | None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if server.poll() is not None:
            return f"server exited with code {server.returncode}"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            conn.getresponse().read()
            return None
        except OSError:
            time.sleep(0.5)
    return f"server not ready after {seconds:.0f} s"


def load(port: int, smiles: list[str], clients: int, seconds: float, molecules: int, timeout: float) -> dict:
    """``clients`` threads posting ``molecules`` SMILES each until ``seconds`` have passed."""
    times: list[float] = []
    errors: Counter = Counter()
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(k: int) -> None:
        i = k
        while time.perf_counter() < stop_at:
            batch = [smiles[(i * molecules + j) % len(smiles)] for j in range(molecules)]
            body = json.dumps({"inputs": {"smiles": batch}}).encode()
            t = time.perf_counter()
            try:
                status = _post(port, body, timeout)
                kind = None if status == 200 else f"HTTP {status}"
            except TimeoutError:
                kind = f"timed out at {timeout:.0f} s"
            except OSError as err:
                kind = type(err).__name__
            with lock:
                if kind is None:
                    times.append((time.perf_counter() - t) * 1000)
                else:
                    errors[kind] += 1
            i += clients

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    done = len(times) + sum(errors.values())
    return {"clients": clients, "molecules": molecules, "seconds": round(wall, 2), "requests": done,
            "ok": len(times), "requests_per_s": round(done / wall, 1), "errors": dict(errors),
            "p50_ms": round(float(np.percentile(times, 50)), 1) if times else None,
            "p99_ms": round(float(np.percentile(times, 99)), 1) if times else None,
            "max_ms": round(max(times), 1) if times else None}


def run(workdir: Path, clients: int, seconds: float, molecules: int, timeout: float, workers: int | None,
        rounds: int, pipe: bool = False) -> dict:
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}",
               MOLWM_CACHE=str(workdir / "cache"))
    ft = subprocess.run([sys.executable, "-m", "molwm", "finetune", "--config",
                         str(ROOT / "configs" / "finetune" / "tiny.yaml"), "--register", "bench_load",
                         "alias=champion", "--no-progress", f"out_dir={workdir / 'ft'}"],
                        env=env, capture_output=True, text=True)
    if ft.returncode:
        return {"error": "fine-tuning failed:\n" + ft.stderr[-1500:]}
    from molwm.data.registry import get_card
    from molwm.data.sources import load_table

    smiles = load_table(get_card("moses"), limit=400).frame["smiles"].tolist()
    port = _free_port()
    cmd = [sys.executable, "-m", "molwm", "serve", "--model", "models:/bench_load@champion", "--port", str(port)]
    if workers:
        cmd += ["--workers", str(workers)]
    log = workdir / "server.log"
    with open(log, "w") as fh:  # with pipe=True, a pipe never read: the server must not write per request
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE if pipe else fh, stderr=subprocess.STDOUT)
    try:
        problem = _wait_ready(port, server)
        if problem:
            return {"error": f"{problem}:\n{'' if pipe else log.read_text()[-1500:]}"}
        for _ in range(3):  # warm-up: the first requests build lazily initialised state
            _post(port, json.dumps({"inputs": {"smiles": smiles[:molecules]}}).encode(), 60)
        out: dict = {"workers": workers or 1, "output": "unread pipe" if pipe else "file",
                     "rss_before_mb": round(_tree_rss_mb(server.pid), 1), "rounds": []}
        for _ in range(rounds):
            out["rounds"].append(load(port, smiles, clients, seconds, molecules, timeout))
            out["rounds"][-1]["rss_after_mb"] = round(_tree_rss_mb(server.pid), 1)
        out["server_alive"] = server.poll() is None
        return out
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds back to back on the same server")
    parser.add_argument("--molecules", type=int, default=3, help="SMILES per request")
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, seconds")
    parser.add_argument("--workers", type=int, default=None, help="molwm serve --workers")
    parser.add_argument("--pipe", action="store_true",
                        help="give the server a stdout pipe that is never read (a full pipe once stalled it)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="molwm-rest-load-") as d:
        res = run(Path(d), args.clients, args.seconds, args.molecules, args.timeout, args.workers, args.rounds,
                  args.pipe)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if "error" in res:
        print(f"load test could not run: {res['error']}")
        sys.exit(1)
    print(f"server: {res['workers']} worker(s), output to {res['output']}, {res['rss_before_mb']:.0f} MB resident "
          f"before the load")
    print("| round | clients | molecules/request | s | requests | req/s | p50 ms | p99 ms | max ms | failed | "
          "server MB after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(res["rounds"], 1):
        failed = ", ".join(f"{n} {k}" for k, n in r["errors"].items()) or "0"
        print(f"| {i} | {r['clients']} | {r['molecules']} | {r['seconds']} | {r['requests']} | "
              f"{r['requests_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {failed} | "
              f"{r['rss_after_mb']:.0f} |")
    print(f"server still answering: {res['server_alive']}")


if __name__ == "__main__":
    main()
