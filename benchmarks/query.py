"""Query throughput, memory and REST latency.

1. Embedding throughput from SMILES, end to end (featurize + positional code +
   encode), for the base model (GINE 4 x 128) at batch 512, printed beside the
   featurizer alone and the encoder alone on the same molecules.
2. ``molwm query`` over a .smi file of N MOSES candidates (``--sizes``), each in
   a fresh process: wall time, molecules/s and peak resident memory, to show
   memory flat in the number of candidates.
3. REST: a 3-seed ensemble is logged to a temporary MLflow store and served with
   ``molwm serve``; a second process posts 1-molecule and 100-molecule requests
   in a bounded loop and reports p50 / p95 latency (``benchmarks/rest.py`` puts
   the same requests beside the in-process call of the same model).
4. Latency of the query API (``WorldModel.predict``, a solubility model fine-tuned
   here for one epoch; latency does not depend on training) on 1 and 100 MOSES
   molecules per call, beside the floor doing the same job with RDKit and
   scikit-learn only: Morgan fingerprints (r=2, 2048 bits) + ridge, and + a
   500-tree random forest, fitted on the same solubility molecules. Calls are
   interleaved so machine noise hits all alike.

Never fails on a slow machine; prints figures and ratios. Usage::

    python benchmarks/query.py [--molecules 20000] [--sizes 10000,100000] [--requests 50] [--skip ...]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLIENT = r"""
import json, sys, time, urllib.request
port, n, size, smiles = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
body = json.dumps({"inputs": {"smiles": (smiles * (size // len(smiles) + 1))[:size]}}).encode()
times = []
for i in range(n + 3):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                 headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()
        assert r.status == 200
    if i >= 3:  # the first requests warm the server up
        times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def throughput(n: int, threads: int) -> dict:
    import torch

    from featurizers.molecule import GRAPH_SPEC, featurize_arrays
    from molwm.data.registry import get_card
    from molwm.data.sources import load_table
    from molwm.encoders.graph import GraphEncoder, GraphEncoderConfig
    from molwm.query import WorldModel

    torch.set_num_threads(threads)
    smiles = load_table(get_card("moses"), limit=n).frame["smiles"].tolist()
    torch.manual_seed(0)
    wm = WorldModel(encoder=GraphEncoder(GRAPH_SPEC, GraphEncoderConfig(dim=128, layers=4)).eval(), batch_size=512)
    wm.embed(smiles[:1024])  # warm-up
    out = {}
    t = time.perf_counter()
    arrays, _ = featurize_arrays(smiles)
    out["featurize"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    with torch.inference_mode():
        for _, b in wm._batches(arrays):
            wm.encoder.embed(b)
    out["pe_and_encode"] = n / (time.perf_counter() - t)
    for workers, torch_threads in ((0, threads), (1, threads), (1, 1)):
        wm.workers = workers
        torch.set_num_threads(torch_threads)
        t = time.perf_counter()
        emb = wm.embed(smiles)
        out[f"end_to_end (featurizer processes {workers}, torch threads {torch_threads})"] = \
            n / (time.perf_counter() - t)
        assert np.isfinite(emb).all()
    torch.set_num_threads(threads)
    return out


def file_query(size: int, workdir: Path, model: Path) -> dict:
    from molwm.data.registry import get_card
    from molwm.data.sources import load_table

    smi = workdir / f"candidates_{size}.smi"
    if not smi.exists():
        frame = load_table(get_card("moses"), limit=size).frame
        smi.write_text("".join(f"{s} m{i}\n" for i, s in enumerate(frame["smiles"])))
    code = (
        "import resource, sys, time\n"
        "from molwm.query_files import run_query\n"
        f"r = run_query({str(model)!r}, {str(workdir / f'out_{size}.parquet')!r}, input_path={str(smi)!r}, "
        "what=['embed'], progress=False)\n"
        "print(r.n, r.n_ok, r.seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        return {"error": proc.stderr[-1500:]}
    n, n_ok, secs, rss_kb = proc.stdout.split()[-4:]
    return {"n": int(n), "ok": int(n_ok), "query_s": float(secs), "process_s": wall,
            "mol_per_s": int(n) / float(secs), "peak_rss_mib": int(rss_kb) / 1024}


def rest_latency(workdir: Path, requests: int) -> dict:
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}")
    from molwm.data.registry import get_card
    from molwm.data.sources import load_table

    root = Path(__file__).resolve().parent.parent
    ft = subprocess.run([sys.executable, "-m", "molwm", "finetune", "--config",
                         str(root / "configs" / "finetune" / "solubility.yaml"), "--register", "bench_query",
                         "alias=champion", "mode=scratch", "epochs=1", "--no-progress", f"out_dir={workdir / 'ft'}"],
                        env=env, capture_output=True, text=True)
    if ft.returncode:
        return {"error": ft.stderr[-1500:]}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "molwm", "serve", "--model", "models:/bench_query@champion",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    smiles = load_table(get_card("moses"), limit=200).frame["smiles"].tolist()
    out = {}
    try:
        import urllib.request

        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        for size in (1, 100):
            n = requests if size == 1 else max(10, requests // 2)
            client = subprocess.run([sys.executable, "-c", CLIENT, str(port), str(n), str(size), json.dumps(smiles)],
                                    capture_output=True, text=True)
            if client.returncode:
                out[size] = {"error": client.stderr[-800:]}
                continue
            times = np.array(json.loads(client.stdout)) * 1000
            out[size] = {"requests": len(times), "p50_ms": float(np.percentile(times, 50)),
                         "p95_ms": float(np.percentile(times, 95))}
    finally:
        server.terminate()
        server.wait(timeout=60)
    return out


def query_latency(workdir: Path, requests: int, threads: int, seeds: str) -> dict:
    """p50 / p95 ms per call of the query API and of the RDKit + scikit-learn floor, same molecules."""
    import torch
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import Ridge

    from molwm.baselines import morgan_fingerprints
    from molwm.config import load_config
    from molwm.data.prepare import PrepareConfig, prepare_dataset
    from molwm.data.registry import get_card
    from molwm.data.sources import load_table
    from molwm.query import WorldModel
    from molwm.train.finetune import FinetuneConfig, run_finetune

    root = Path(__file__).resolve().parent.parent
    torch.set_num_threads(threads)
    config = load_config(FinetuneConfig, root / "configs" / "finetune" / "solubility.yaml",
                         ["mode=scratch", "epochs=1", f"seeds=[{seeds}]", f"out_dir={workdir / 'ft_latency'}"])
    result = run_finetune(config, progress=False)
    model = WorldModel.load(result.checkpoint)
    cache = prepare_dataset(PrepareConfig(dataset="solubility", progress=False)).cache
    meta, target = cache.meta(), cache.target_names[0]
    train_x = morgan_fingerprints(meta["smiles"].tolist())
    ridge = Ridge(alpha=1.0).fit(train_x, meta[target].to_numpy())
    forest = RandomForestRegressor(n_estimators=500, n_jobs=threads, random_state=0).fit(
        train_x, meta[target].to_numpy())
    smiles = load_table(get_card("moses"), limit=400).frame["smiles"].tolist()
    callers = {
        f"molwm WorldModel.predict ({len(model.members)} member{'s' * (len(model.members) > 1)})":
            lambda s: model.predict(s),
        "floor: RDKit Morgan + sklearn ridge": lambda s: ridge.predict(morgan_fingerprints(s)),
        "RDKit Morgan + sklearn random forest (500 trees)": lambda s: forest.predict(morgan_fingerprints(s)),
    }
    out: dict = {"members": len(model.members), "threads": threads}
    for size in (1, 100):
        n = requests if size == 1 else max(10, requests // 2)
        times: dict[str, list[float]] = {k: [] for k in callers}
        for i in range(n + 3):
            batch = [smiles[(i * size + j) % len(smiles)] for j in range(size)]
            for name, fn in callers.items():
                t = time.perf_counter()
                fn(batch)
                if i >= 3:  # warm-up calls not counted
                    times[name].append((time.perf_counter() - t) * 1000)
        out[size] = {k: {"calls": len(v), "p50_ms": float(np.percentile(v, 50)),
                         "p95_ms": float(np.percentile(v, 95))} for k, v in times.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--skip", default="",
                        help="comma-separated parts to skip: throughput,files,rest,latency")
    parser.add_argument("--latency-seeds", default="0", help="ensemble members of the query-latency model")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    record: dict = {"molecules": args.molecules, "threads": args.threads}

    if "throughput" not in skip:
        tp = throughput(args.molecules, args.threads)
        print(f"\n## embedding throughput ({args.molecules:,} MOSES molecules, GINE 4 x 128, batch 512, "
              f"{args.threads} threads)")
        print("| stage | molecules/s | vs featurizer alone |\n|---|---|---|")
        for k, v in tp.items():
            print(f"| {k} | {v:,.0f} | {v / tp['featurize']:.2f}x |")
        record["throughput"] = tp
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        if "files" not in skip:
            import torch

            from featurizers.molecule import GRAPH_SPEC
            from molwm.checkpoints import save_checkpoint
            from molwm.config import to_dict
            from molwm.encoders.graph import GraphEncoderConfig
            from molwm.jepa.model import GraphJEPA, JEPAConfig
            from molwm.train.pretrain import PretrainConfig

            torch.manual_seed(0)
            cfg = PretrainConfig(model=JEPAConfig(encoder=GraphEncoderConfig(dim=128, layers=4)))
            model = GraphJEPA(GRAPH_SPEC, cfg.model)
            ckpt = save_checkpoint({"kind": "graph_jepa", "config": to_dict(cfg), "model": model.state_dict()},
                                   d / "encoder.pt")
            print("\n## molwm query over a .smi file (embed, fresh process per size)")
            print("| candidates | ok | query s | molecules/s | peak RSS MiB |\n|---|---|---|---|---|")
            for size in [int(s) for s in args.sizes.split(",")]:
                r = file_query(size, d, ckpt)
                if "error" in r:
                    print(f"| {size:,} | failed: {r['error'][-300:]} |")
                else:
                    print(f"| {r['n']:,} | {r['ok']:,} | {r['query_s']:.1f} | {r['mol_per_s']:,.0f} | "
                          f"{r['peak_rss_mib']:,.0f} |")
        if "rest" not in skip:
            lat = rest_latency(d, args.requests)
            print("\n## REST latency (molwm serve on 127.0.0.1, 3-seed solubility ensemble, client in a second process)")
            if "error" in lat:
                print(f"failed: {lat['error']}")
            else:
                print("| molecules per request | requests | p50 ms | p95 ms |\n|---|---|---|---|")
                for size, r in lat.items():
                    if "error" in r:
                        print(f"| {size} | failed: {r['error'][-300:]} |")
                    else:
                        print(f"| {size} | {r['requests']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |")
            record["rest"] = lat
        if "latency" not in skip:
            lat = query_latency(d, args.requests, args.threads, args.latency_seeds)
            record["latency"] = lat
            print(f"\n## query latency per call (MOSES molecules, {args.threads} torch/sklearn threads, "
                  "calls interleaved)")
            print("| molecules per call | method | calls | p50 ms | p95 ms | p50 / floor |\n|---|---|---|---|---|---|")
            for size in (1, 100):
                floor = lat[size]["floor: RDKit Morgan + sklearn ridge"]["p50_ms"]
                for name, r in lat[size].items():
                    print(f"| {size} | {name} | {r['calls']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
                          f"{r['p50_ms'] / floor:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()
