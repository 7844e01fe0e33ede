"""How fast is each encoder size on this machine? Descriptor-pretraining steps (the base model's objective) per size.

For each ``DIMxLAYERS`` it runs ``configs/pretrain/descriptors.yaml`` (the objective, data and
batch of ``molwm:base``) for ``--steps`` steps on the first ``--limit`` MOSES molecules and
reports parameters, graphs/s (the median of the logged points after the first, so warm-up and
the first batch's allocations are left out), and what that rate buys in the base model's
wall-time budget (``--budget``, 2,137 s): molecules seen and passes over the 1.58M corpus.
Sizes run one after the other in one process, so machine noise hits them alike. Usage::

    python benchmarks/encoder_sizes.py --sizes 128x4,256x4,300x5,384x6,512x6 --steps 40 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = 1_584_663


def measure(dim: int, layers: int, steps: int, limit: int, out: Path, threads: int) -> dict:
    """One size's parameters and graphs/s over ``steps`` descriptor-pretraining steps."""
    from molwm.config import load_config
    from molwm.train.loop import count_parameters
    from molwm.train.pretrain import PretrainConfig, run_pretrain

    cfg = load_config(PretrainConfig, ROOT / "configs/pretrain/descriptors.yaml",
                      [f"model.encoder.dim={dim}", f"model.encoder.layers={layers}", f"max_steps={steps}",
                       f"limit={limit}", "log_every=5", "health_every=1000", f"checkpoint_every={steps}",
                       f"out_dir={out / f'{dim}x{layers}'}", f"threads={threads}", "device=cpu",
                       "exclude=[]"])  # the leakage guard's InChIKeys are not what is timed
    result = run_pretrain(cfg, progress=False)
    rates = [v for _, v in result.history["graphs_per_s"]][1:] or [v for _, v in result.history["graphs_per_s"]]
    encoder = result.model.encoder if hasattr(result.model, "encoder") else result.model
    return {"dim": dim, "layers": layers, "parameters": count_parameters(result.model),
            "encoder_parameters": count_parameters(encoder), "graphs_per_s": statistics.median(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128x4,256x4,300x5,384x6,512x6")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--limit", type=int, default=20000, help="MOSES molecules (the descriptor table is cached)")
    parser.add_argument("--budget", type=float, default=2137.0, help="wall-time budget to project (s)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            dim, layers = (int(x) for x in size.lower().split("x"))
            row = measure(dim, layers, args.steps, args.limit, Path(tmp), args.threads)
            row["molecules_in_budget"] = row["graphs_per_s"] * args.budget
            row["passes_in_budget"] = row["molecules_in_budget"] / CORPUS
            rows.append(row)
            print(f"{dim:>4} x {layers}  {row['encoder_parameters']:>10,} encoder parameters  "
                  f"{row['graphs_per_s']:>7.1f} graphs/s  in {args.budget:.0f} s: "
                  f"{row['molecules_in_budget'] / 1e6:.2f}M molecules ({row['passes_in_budget']:.2f} passes)",
                  flush=True)
    base = rows[0]["graphs_per_s"]
    for r in rows[1:]:
        print(f"{r['dim']}x{r['layers']} / {rows[0]['dim']}x{rows[0]['layers']}: {r['graphs_per_s'] / base:.2f}x "
              f"the rate, {r['encoder_parameters'] / rows[0]['encoder_parameters']:.1f}x the parameters")
    if args.json:
        Path(args.json).write_text(json.dumps({"sizes": rows, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
