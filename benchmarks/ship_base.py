"""Write a shipped model (``molwm:<name>``) from a graph pretraining checkpoint, and print the digest to pin.

    python benchmarks/ship_base.py OUT/checkpoint.pt [--name base]

Keeps what loading the encoder needs (kind, config, featurizer spec, the encoder's weights under
their prefix) plus provenance (source checkpoint digest, steps, samples seen, wall time), and
drops the optimiser, the EMA's context twin, heads and resume state. The file goes to
``molwm/weights/<name>.pt``; pin the printed SHA-256 in ``molwm/weights/__init__.py`` and fill in
``docs/models/<name>.md``.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import torch

from molwm.checkpoints import CHECKPOINT_FORMAT, load_checkpoint
from molwm.kinds import load_encoder
from molwm.weights import FOLDER, sha256

KEEP = ("kind", "config", "spec", "objective", "encoder_prefix", "step", "samples_seen", "wall_seconds",
        "descriptor_spec", "exclusions")


def slim(state: dict, source: Path) -> dict:
    """The shipped state of a pretraining checkpoint (float32 encoder weights only)."""
    prefix = state["encoder_prefix"]
    weights = {k: v.clone() for k, v in state["model"].items() if k.startswith(prefix)}
    out = {k: state[k] for k in KEEP if k in state}
    out.update(model=weights, format=CHECKPOINT_FORMAT,
               shipped={"source_sha256": sha256(source), "n_parameters": sum(v.numel() for v in weights.values())})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--name", default="base")
    parser.add_argument("--out", type=Path, default=None, help="default molwm/weights/<name>.pt")
    args = parser.parse_args()
    state = slim(load_checkpoint(args.checkpoint), args.checkpoint)
    out = args.out or FOLDER / f"{args.name}.pt"
    buffer = io.BytesIO()
    torch.save(state, buffer)
    out.write_bytes(buffer.getvalue())
    encoder = load_encoder(out)  # loads back through the same path every user takes
    print(json.dumps({"file": str(out), "bytes": out.stat().st_size, "sha256": sha256(out),
                      "encoder": {"dim": encoder.config.dim, "layers": encoder.config.layers},
                      "n_parameters": state["shipped"]["n_parameters"]}, indent=1))


if __name__ == "__main__":
    main()
