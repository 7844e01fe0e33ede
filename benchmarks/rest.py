"""REST latency of ``molwm serve`` beside the in-process call of the same model on the same molecules.

A solubility model is fine-tuned for one epoch (latency does not depend on
training), logged and registered in a temporary SQLite MLflow store, and served
with ``molwm serve --model models:/bench_rest@champion`` on 127.0.0.1. Then, for
requests of 1 and 100 MOSES molecules, three calls are interleaved request by
request (so machine noise hits all alike; 3 warm-up rounds not counted):

* in-process, query API: ``WorldModel.load(uri).predict(smiles)``,
* in-process, the pyfunc the server runs: ``mlflow.pyfunc.load_model(uri).predict(frame)``,
* REST: ``POST /invocations`` with ``{"inputs": {"smiles": [...]}}`` (a new
  connection per request, as a plain client would), answer parsed.

The ratio REST / in-process pyfunc is the cost of HTTP, JSON and the scoring
server. The REST answer is checked against the in-process one. The server and
this process use the same number of torch threads (``--threads``). Never fails
on a slow machine. Usage::

    python benchmarks/rest.py [--requests 50] [--seeds 0,1,2] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, smiles: list[str]) -> dict:
    body = json.dumps({"inputs": {"smiles": smiles}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def _wait_ready(port: int, server: subprocess.Popen, seconds: float = 240) -> str | None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if server.poll() is not None:
            return f"server exited with code {server.returncode}"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).read()
            return None
        except OSError:
            time.sleep(0.5)
    return f"server not ready after {seconds:.0f} s"


def _stats(ms: list[float]) -> dict:
    return {"calls": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


def run(workdir: Path, requests: int, seeds: str, threads: int) -> dict:
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}", OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_URI",)})
    t0 = time.perf_counter()
    ft = subprocess.run([sys.executable, "-m", "molwm", "finetune", "--config",
                         str(ROOT / "configs" / "finetune" / "solubility.yaml"), "--register", "bench_rest",
                         "alias=champion", "mode=scratch", "epochs=1", f"seeds=[{seeds}]", f"threads={threads}",
                         "--no-progress", f"out_dir={workdir / 'ft'}"], env=env, capture_output=True, text=True)
    if ft.returncode:
        return {"error": "fine-tuning failed:\n" + ft.stderr[-1500:]}
    uri = "models:/bench_rest@champion"
    out: dict = {"setup_train_s": time.perf_counter() - t0, "threads": threads}

    import mlflow.pyfunc
    import pandas as pd
    import torch

    from molwm.data.registry import get_card
    from molwm.data.sources import load_table
    from molwm.query import WorldModel

    torch.set_num_threads(threads)
    world = WorldModel.load(uri)
    pyfunc = mlflow.pyfunc.load_model(uri)
    out["members"] = len(world.members)
    smiles = load_table(get_card("moses"), limit=400).frame["smiles"].tolist()

    port = _free_port()
    t0 = time.perf_counter()
    # molwm serve runs the MLflow server in its own process group and stops it on SIGTERM
    log = workdir / "server.log"  # a file, not a pipe: the server's request log must never block it
    with open(log, "w") as fh:
        server = subprocess.Popen([sys.executable, "-m", "molwm", "serve", "--model", uri, "--port", str(port)],
                                  env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        problem = _wait_ready(port, server)
        if problem:
            return {**out, "error": f"{problem}:\n{log.read_text()[-1500:]}"}
        out["server_start_s"] = time.perf_counter() - t0
        callers = {
            "in-process WorldModel.predict": lambda s: world.predict(s),
            "in-process pyfunc.predict": lambda s: pyfunc.predict(pd.DataFrame({"smiles": s})),
            "REST POST /invocations": lambda s: _post(port, s),
        }
        for size in (1, 100):
            n = requests if size == 1 else max(10, requests // 2)
            times: dict[str, list[float]] = {k: [] for k in callers}
            answers = {}
            for i in range(n + 3):
                batch = [smiles[(i * size + j) % len(smiles)] for j in range(size)]
                for name, fn in callers.items():
                    t = time.perf_counter()
                    answers[name] = fn(batch)
                    if i >= 3:  # warm-up rounds not counted
                        times[name].append((time.perf_counter() - t) * 1000)
            out[size] = {k: _stats(v) for k, v in times.items()}
            out[size]["same_answer"] = _same_answer(answers["in-process pyfunc.predict"],
                                                    answers["REST POST /invocations"])
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    return out


def _same_answer(local, remote: dict) -> bool:
    """The REST rows equal the in-process rows (numeric columns to 1e-5)."""
    import pandas as pd

    rows = remote.get("predictions", remote)
    frame = pd.DataFrame(rows)
    if list(frame.columns) != list(local.columns) or len(frame) != len(local):
        return False
    for col in local.columns:
        a, b = local[col], frame[col]
        if pd.api.types.is_numeric_dtype(a.dropna().infer_objects()) and len(a.dropna()):
            if not np.allclose(a.astype(float), b.astype(float), atol=1e-5, equal_nan=True):
                return False
        elif a.astype(str).tolist() != b.astype(str).tolist():
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50, help="1-molecule requests (100-molecule: half)")
    parser.add_argument("--seeds", default="0,1,2", help="ensemble members of the served model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, here and in the server")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="molwm-rest-") as d:
        res = run(Path(d), args.requests, args.seeds, args.threads)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    if "error" in res:
        print(f"REST benchmark could not run: {res['error']}")
        return
    print(f"model: solubility, {res['members']}-member ensemble (1 epoch), {args.threads} torch thread(s) here and "
          f"in the server; server ready in {res['server_start_s']:.1f} s")
    print("| molecules per request | call | calls | p50 ms | p95 ms | p50 / in-process pyfunc |")
    print("|---|---|---|---|---|---|")
    for size in (1, 100):
        base = res[size]["in-process pyfunc.predict"]["p50_ms"]
        for name, r in res[size].items():
            if name == "same_answer":
                continue
            print(f"| {size} | {name} | {r['calls']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                  f"{r['p50_ms'] / base:.2f} |")
    for size in (1, 100):
        print(f"REST answer equals the in-process answer ({size} molecules): {res[size]['same_answer']}")


if __name__ == "__main__":
    main()
