"""How many benchmark molecules sit in the pretraining corpus: MOSES against every labelled set, by InChIKey.

    python benchmarks/leakage.py                          # all of MOSES against the packaged labelled sets
    python benchmarks/leakage.py --limit 100000 --jobs 2  # the first 100k MOSES molecules

Prints, for each labelled set (solubility, FreeSolv, B3DB, MoleculeACE's 30 targets, ChEMBL drugs), its
molecules, how many of them MOSES contains and how many MOSES rows that removes: what ``exclude:`` in a
pretraining config takes out (molwm.data.overlap). Never fails for overlaps; it reports them.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from molwm.data.overlap import KEY_WIDTH, dataset_inchikeys, inchikeys
from molwm.data.registry import DatasetError, get_card
from molwm.data.sources import load_table

SETS = ["solubility", "freesolv", "b3db_classification", "moleculeace", "chembl_drugs"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N MOSES rows (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sets", default=",".join(SETS))
    args = parser.parse_args()
    smiles = load_table(get_card("moses"), limit=args.limit).frame["smiles"].tolist()
    t = time.perf_counter()
    chunks = [smiles[i:i + 20_000] for i in range(0, len(smiles), 20_000)]
    with ProcessPoolExecutor(args.jobs) as pool:
        keys = np.concatenate(list(pool.map(inchikeys, chunks)))
    print(f"MOSES: {len(smiles):,} molecules, InChIKeys in {time.perf_counter() - t:.0f} s with {args.jobs} processes "
          f"({int((keys == b'').sum())} without a key)")
    print(f"{'set':<22} {'molecules':>10} {'in MOSES':>9} {'MOSES rows':>11}")
    total = np.zeros(len(keys), dtype=bool)
    for name in [s for s in args.sets.split(",") if s]:
        try:
            found = dataset_inchikeys([name])[name]
        except DatasetError as err:
            print(f"{name:<22} not available: {err}")
            continue
        mine = np.isin(keys, np.array(sorted(found), dtype=f"S{KEY_WIDTH}")) & (keys != b"")
        total |= mine
        print(f"{name:<22} {len(found):>10,} {len(set(keys[mine].tolist())):>9,} {int(mine.sum()):>11,}")
    print(f"{'all of them':<22} {'':>10} {'':>9} {int(total.sum()):>11,}  "
          f"({100 * total.mean():.3f}% of the corpus)")


if __name__ == "__main__":
    main()
