"""Descriptor targets: throughput and memory of molwm's table beside RDKit's full descriptor set.

    python benchmarks/descriptors.py                       # 2,000-molecule peers, tables of 10k and 100k MOSES
    python benchmarks/descriptors.py --sizes 1584663       # the whole of MOSES (the issue's target: < 40 min)

1. Per core, on the same 2,000 MOSES molecules: molwm's ``rdkit2d-fast`` set (125 descriptors,
   :mod:`featurizers.descriptors`) against RDKit's ``Descriptors.CalcMolDescriptors`` (all 217), and
   Mordred's 2D set where ``mordred`` (``mordredcommunity``) is installed.
2. For each size: a fresh process prepares the graph cache (not timed) and then the descriptor table
   with ``--jobs`` workers (timed), and reports seconds, molecules/s, the projection to all 1.58M MOSES
   molecules and the peak resident memory (this process and its workers): memory should not grow with
   the number of molecules.
Prints a table and the ratios; never fails for being slow.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

MOSES = 1_584_663


def _peers(n: int) -> dict:
    from rdkit import Chem
    from rdkit.Chem import Descriptors

    from featurizers.descriptors import compute_descriptors
    from molwm.data.registry import get_card
    from molwm.data.sources import load_table

    smiles = load_table(get_card("moses"), limit=n).frame["smiles"].tolist()
    out = {}
    t = time.perf_counter()
    compute_descriptors(smiles)
    out["molwm rdkit2d-fast (125)"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for s in smiles:
        Descriptors.CalcMolDescriptors(Chem.MolFromSmiles(s))
    out[f"RDKit CalcMolDescriptors ({len(Descriptors.descList)})"] = n / (time.perf_counter() - t)
    try:
        from mordred import Calculator, descriptors
    except ImportError:
        out["Mordred 2D"] = None
    else:
        calc = Calculator(descriptors, ignore_3D=True)
        t = time.perf_counter()
        calc.pandas([Chem.MolFromSmiles(s) for s in smiles[: n // 4]], nproc=1, quiet=True)
        out[f"Mordred 2D ({len(calc.descriptors)})"] = (n // 4) / (time.perf_counter() - t)
    return out


def _measure(size: int, jobs: int) -> dict:
    """One table in this (fresh) process: the graph cache first, then the timed descriptor table."""
    from molwm.data.descriptors import prepare_descriptors
    from molwm.data.prepare import PrepareConfig, prepare_dataset

    with tempfile.TemporaryDirectory(prefix="molwm-desc-bench-") as d:
        prep = prepare_dataset(PrepareConfig(dataset="moses", limit=size, cache_dir=d, n_jobs=jobs, progress=False))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        table = prepare_descriptors(prep.cache, n_jobs=jobs, progress=False)
        seconds = time.perf_counter() - t
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        return {"size": len(table), "seconds": seconds, "mol_per_s": len(table) / seconds,
                "peak_rss_mb": max(own, workers) / 1024, "rss_before_mb": rss_before / 1024,
                "disk_mb": sum(f.stat().st_size for f in table.path.iterdir()) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated table sizes (MOSES rows)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--peers", type=int, default=2000, help="molecules for the per-core comparison (0: skip)")
    parser.add_argument("--measure", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(_measure(args.measure, args.jobs)))
        return
    if args.peers:
        peers = _peers(args.peers)
        ours = next(iter(peers.values()))
        print(f"per core, {args.peers:,} MOSES molecules:")
        for name, rate in peers.items():
            print(f"  {name:<34} " + (f"{rate:8.0f} mol/s  (molwm / this: {ours / rate:.1f}x)" if rate else
                                       "not installed (pip install mordredcommunity)"))
    print(f"\ntables with {args.jobs} workers (graph cache made first, not timed):")
    print(f"  {'molecules':>10} {'seconds':>9} {'mol/s':>7} {'all MOSES (min)':>16} {'peak RSS MB':>12} {'disk MB':>8}")
    for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
        out = subprocess.run([sys.executable, __file__, "--measure", str(size), "--jobs", str(args.jobs)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {r['size']:>10,} {r['seconds']:>9.1f} {r['mol_per_s']:>7.0f} {MOSES / r['mol_per_s'] / 60:>16.1f} "
              f"{r['peak_rss_mb']:>12.0f} {r['disk_mb']:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
