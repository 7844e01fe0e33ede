"""Is a refactor behaviour-neutral? Train tiny graph, multimodal and world runs, save weights and losses,
and compare two such folders bit for bit.

    python benchmarks/same_runs.py train OUT --lab LAB --world-lab WLAB      # with this checkout
    PYTHONPATH=<old checkout> python benchmarks/same_runs.py train OLD ...   # with an older one
    python benchmarks/same_runs.py compare OLD OUT

LAB: ``molwm sim generate --molecules 60 --source moses --out LAB``; WLAB: the same with
``--molecules 40 --doses 1,10 --times 0,8,24``. Runs: graph jepa / generative / contrastive
(configs/pretrain/tiny.yaml), multimodal jepa / generative (multimodal_tiny.yaml), world (lab_tiny.yaml).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def train(out: Path, lab: str, world_lab: str) -> None:
    from molwm.config import load_config
    from molwm.train.pretrain import PretrainConfig, run_pretrain
    from molwm.train.pretrain_mm import MultimodalPretrainConfig, run_multimodal_pretrain
    from molwm.world.run import run_world
    from molwm.world.train import WorldConfig

    out.mkdir(parents=True, exist_ok=True)
    runs = [(f"graph-{o}", run_pretrain, PretrainConfig, "configs/pretrain/tiny.yaml", [f"objective={o}"])
            for o in ("jepa", "generative", "contrastive")]
    runs += [(f"mm-{o}", run_multimodal_pretrain, MultimodalPretrainConfig, "configs/pretrain/multimodal_tiny.yaml",
              [f"objective={o}", f"data.lab={lab}"]) for o in ("jepa", "generative")]
    runs += [("world", run_world, WorldConfig, "configs/world/lab_tiny.yaml", [f"data.lab={world_lab}"])]
    losses = {}
    for name, run, schema, config, overrides in runs:
        result = run(load_config(schema, REPO / config, [*overrides, f"out_dir={out / name}"]), progress=False)
        losses[name] = result.history["loss"]
        torch.save(torch.load(result.checkpoint, weights_only=True)["model"], out / f"{name}.pt")
        print(name, "done", flush=True)
    (out / "losses.json").write_text(json.dumps(losses))


def compare(a: Path, b: Path) -> None:
    la, lb = json.loads((a / "losses.json").read_text()), json.loads((b / "losses.json").read_text())
    for name in la:
        wa, wb = torch.load(a / f"{name}.pt"), torch.load(b / f"{name}.pt")
        same = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        diff = max((wa[k] - wb[k]).abs().max().item() for k in wa if k in wb and wa[k].is_floating_point())
        print(f"{name:<18} weights {'bit-identical' if same else f'differ (max {diff:.3g})'}, "
              f"losses {'equal' if la[name] == lb[name] else f'{la[name][-1][1]:.6f} vs {lb[name][-1][1]:.6f}'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("out", type=Path)
    t.add_argument("--lab", required=True)
    t.add_argument("--world-lab", required=True)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = parser.parse_args()
    train(args.out, args.lab, args.world_lab) if args.cmd == "train" else compare(args.a, args.b)


if __name__ == "__main__":
    main()
