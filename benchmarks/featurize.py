"""Molecule featurization throughput, side by side in one process.

Runs on the same MOSES SMILES, in an interleaved order repeated ``--repeats``
times (the machine is shared and noisy; the best of the repeats is kept):

* bare ``Chem.MolFromSmiles`` (the floor: parsing and sanitizing only),
* molwm ``featurize_smiles`` with ``n_jobs=1`` and ``n_jobs=2`` (PyG graphs out),
* molwm ``featurize_arrays`` (the compact arrays that ``data prepare`` stores),
* PyG ``torch_geometric.utils.from_smiles``,
* DeepChem ``MolGraphConvFeaturizer(use_edges=True)`` + ``.to_pyg_graph()``,
* Chemprop v2 ``SimpleMoleculeMolGraphFeaturizer`` when chemprop is installed.

Prints molecules/s and ratios against our featurizer; never fails on a slow
machine. Usage::

    python benchmarks/featurize.py [--n 20000] [--repeats 3] [--peer-n 5000] [--json out.json]

Peers slower than ours are timed on ``--peer-n`` molecules (same first rows)
to keep the run short; rates are per molecule so they compare directly.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import time
from importlib import metadata
from pathlib import Path

from rdkit import Chem, rdBase


def moses_smiles(n: int) -> list[str]:
    path = metadata.distribution("molsets").locate_file("moses/dataset/data/train.csv.gz")
    out = []
    with gzip.open(path, "rt") as fh:
        next(fh)
        for line in fh:
            out.append(line.split(",", 1)[0])
            if len(out) == n:
                break
    return out


def rate(fn, smiles) -> float:
    t0 = time.perf_counter()
    fn(smiles)
    return len(smiles) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="molecules for the fast featurizers")
    parser.add_argument("--peer-n", type=int, default=5000, help="molecules for the slow peers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the rates here")
    args = parser.parse_args()

    from featurizers.molecule import featurize_arrays, featurize_smiles

    smiles = moses_smiles(args.n)
    peer = smiles[: args.peer_n]

    def bare(s):
        with rdBase.BlockLogs():
            return [Chem.MolFromSmiles(x) for x in s]

    from torch_geometric.utils import from_smiles

    runners = {
        "rdkit MolFromSmiles (floor)": (bare, smiles),
        "molwm featurize_arrays": (lambda s: featurize_arrays(s), smiles),
        "molwm featurize_smiles n_jobs=1": (lambda s: featurize_smiles(s, n_jobs=1), smiles),
        "molwm featurize_smiles n_jobs=2": (lambda s: featurize_smiles(s, n_jobs=2), smiles),
        "PyG from_smiles": (lambda s: [from_smiles(x) for x in s], peer),
    }
    try:
        import deepchem as dc

        dc_feat = dc.feat.MolGraphConvFeaturizer(use_edges=True)
        runners["DeepChem MolGraphConv+to_pyg"] = (
            lambda s: [g.to_pyg_graph() for g in dc_feat.featurize(s)], peer[: max(1, args.peer_n // 4)]
        )
    except Exception as err:  # noqa: BLE001 - a missing peer is reported, not fatal
        print(f"DeepChem unavailable: {err}")
    try:
        from chemprop.featurizers import SimpleMoleculeMolGraphFeaturizer

        cp = SimpleMoleculeMolGraphFeaturizer()
        runners["Chemprop v2 MolGraph"] = (lambda s: [cp(Chem.MolFromSmiles(x)) for x in s], peer)
    except Exception:  # noqa: BLE001
        print("Chemprop v2 not installed: skipped")

    # warm up imports and pools once
    for fn, data in runners.values():
        fn(data[:200])
    best: dict[str, float] = {}
    for r in range(args.repeats):
        for name, (fn, data) in runners.items():
            best[name] = max(best.get(name, 0.0), rate(fn, data))
        print(f"repeat {r + 1}/{args.repeats} done")

    ours = best["molwm featurize_smiles n_jobs=1"]
    print()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"rdkit {metadata.version('rdkit')}, torch_geometric {metadata.version('torch_geometric')}")
    print(f"workload: first {args.n} MOSES train SMILES (peers: first {args.peer_n}); best of {args.repeats}")
    print()
    print(f"| {'featurizer':36s} | {'mol/s':>8s} | {'ours n_jobs=1 / this':>20s} |")
    print(f"|{'-' * 38}|{'-' * 10}|{'-' * 22}|")
    for name, value in best.items():
        print(f"| {name:36s} | {value:8,.0f} | {ours / value:20.2f} |")
    print()
    floor = best["rdkit MolFromSmiles (floor)"]
    print(f"ours vs PyG from_smiles:        {ours / best['PyG from_smiles']:.2f}x  (target >= 1.5x)")
    if "DeepChem MolGraphConv+to_pyg" in best:
        print(f"ours vs DeepChem:               {ours / best['DeepChem MolGraphConv+to_pyg']:.2f}x  (target >= 3x)")
    print(f"bare parse / ours:              {floor / ours:.2f}   (aim <= 2)")
    print(f"bare parse / ours arrays:       {floor / best['molwm featurize_arrays']:.2f}")
    par = best["molwm featurize_smiles n_jobs=2"] / ours
    print(f"n_jobs=2 / n_jobs=1:            {par:.2f}x  (target >= 1.6x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"mol_per_s": best, "ours": "molwm featurize_smiles n_jobs=1",
                                               "n": args.n, "peer_n": args.peer_n, "repeats": args.repeats},
                                              indent=1))


if __name__ == "__main__":
    main()
