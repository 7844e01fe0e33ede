"""Is a refactor behaviour-neutral? Train tiny graph, multimodal and world runs, save weights and losses,
and compare two such folders bit for bit.

    python benchmarks/same_runs.py train OUT --lab LAB --world-lab WLAB      # with this checkout
    PYTHONPATH=<old checkout> python benchmarks/same_runs.py train OLD ...   # with an older one
    python benchmarks/same_runs.py compare OLD OUT

LAB: ``molwm sim generate --molecules 60 --source moses --out LAB``; WLAB: the same with
``--molecules 40 --doses 1,10 --times 0,8,24``. Runs: graph jepa / generative / contrastive
(configs/pretrain/tiny.yaml), multimodal jepa / generative (multimodal_tiny.yaml), world (lab_tiny.yaml),
and fine-tunes of FreeSolv's first 160 rows (2 seeds, 6 epochs) in ``full``, ``scratch``,
``linear_probe`` and staged + descriptor-input modes (from ``molwm:base``), compared by their
members' weights and per-seed metrics (``--no-finetune`` skips them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


FINETUNES = {"ft-full": ["mode=full", "from_model=molwm:base"],
             "ft-scratch": ["mode=scratch", "encoder.dim=32", "encoder.layers=2"],
             "ft-probe": ["mode=linear_probe", "from_model=molwm:base"],
             "ft-staged-desc": ["mode=full", "from_model=molwm:base", "freeze_epochs=2", "extra.descriptors=true"]}


def train_finetunes(out: Path) -> dict:
    """The fine-tunes above; each one's members' weights saved flat, its per-seed metrics returned as its history."""
    from molwm.config import load_config
    from molwm.train.finetune import FinetuneConfig, run_finetune

    metrics = {}
    for name, items in FINETUNES.items():
        cfg = load_config(FinetuneConfig, REPO / "configs/finetune/freesolv.yaml",
                          ["limit=160", f"cache_dir={out / 'cache'}", "seeds=[0,1]", "epochs=6", "patience=3",
                           "threads=1", f"out_dir={out / name}", *items])
        result = run_finetune(cfg, progress=False)
        members = torch.load(result.checkpoint, weights_only=True)["members"]
        torch.save({f"{i}.{k}": v for i, m in enumerate(members) for k, v in m.items() if isinstance(v, torch.Tensor)},
                   out / f"{name}.pt")
        metrics[name] = [[i, m["test_rmse"]] for i, m in enumerate(result.per_seed)]
        print(name, "done", flush=True)
    return metrics


def train(out: Path, lab: str, world_lab: str, finetunes: bool = True) -> None:
    from molwm.config import load_config
    from molwm.train.pretrain import PretrainConfig, run_pretrain
    from molwm.train.pretrain_mm import MultimodalPretrainConfig, run_multimodal_pretrain
    from molwm.world.run import run_world
    from molwm.world.train import WorldConfig

    out.mkdir(parents=True, exist_ok=True)
    runs = [(f"graph-{o}", run_pretrain, PretrainConfig, "configs/pretrain/tiny.yaml", [f"objective={o}"])
            for o in ("jepa", "generative", "contrastive")]
    if lab is None:
        runs = []  # fine-tunes only
    runs += [] if lab is None else [(f"mm-{o}", run_multimodal_pretrain, MultimodalPretrainConfig, "configs/pretrain/multimodal_tiny.yaml",
              [f"objective={o}", f"data.lab={lab}"]) for o in ("jepa", "generative")]
    runs += [] if world_lab is None else [("world", run_world, WorldConfig, "configs/world/lab_tiny.yaml",
                                           [f"data.lab={world_lab}"])]
    losses = {}
    for name, run, schema, config, overrides in runs:
        result = run(load_config(schema, REPO / config, [*overrides, f"out_dir={out / name}"]), progress=False)
        losses[name] = result.history["loss"]
        torch.save(torch.load(result.checkpoint, weights_only=True)["model"], out / f"{name}.pt")
        print(name, "done", flush=True)
    if finetunes:
        losses.update(train_finetunes(out))
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
    t.add_argument("--lab", default=None, help="multimodal lab (without it and --world-lab: fine-tunes only)")
    t.add_argument("--world-lab", default=None)
    t.add_argument("--no-finetune", action="store_true", help="skip the fine-tunes")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.cmd == "train":
        train(args.out, args.lab, args.world_lab, not args.no_finetune)
    else:
        compare(args.a, args.b)


if __name__ == "__main__":
    main()
