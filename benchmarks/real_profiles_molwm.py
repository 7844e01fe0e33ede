"""molwm's graph + profile model on real profiles: retrieval from structure through the predictor (issue 27).

    python benchmarks/real_profiles_molwm.py [--set cell_injury] [--seeds 0] [--folds 5] [--fold-list 0]
        [--steps 3000] [--chunks 0] [--objective jepa] [--map] [--out outputs/bench/real_profiles_molwm]

Reuses the baselines' units, folds and metric (``benchmarks/real_profiles.py``: conditions = median profile
per compound, dose and time; 5-fold Bemis-Murcko scaffold folds per seed; cosine rank of the true profile
among the held-out conditions: top-1, top-5%, MRR). For each (seed, fold, chunk size): pretrain a graph +
profile model (``configs/pretrain/profiles_cell_injury.yaml``, ``--steps`` steps, one thread) on the wells of
the training compounds (DMSO wells included), then for each held-out condition

* query: the predictor's forecast of every profile token from the compound's graph alone, asked with the
  condition's dose and time, mean-pooled and layer-normed (the same pooling as the target embedding);
* keys: the target encoder's pooled embedding (64 dims, the config's model.dim) of each held-out
  condition's median profile, standardised with the training wells' statistics;

and ranks the keys by cosine. Beside it on the same fold: ``ridge_morgan``, ``nn_tanimoto`` and ``chance``
from the baselines' own functions, and ``ridge_on_embedding`` (the same ridge from Morgan + dose + time, to
the target embeddings: how much of the embedding structure alone predicts). With ``--map``: the phenotypic
activity mAP of the held-out compounds' wells against all DMSO wells (``molwm.tasks.map_metrics``), the raw
standardised features beside the target embedding.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import real_profiles as rp  # the baselines' units, folds and metric
import torch
import torch.nn.functional as F

from featurizers.molecule import featurize_arrays
from molwm.atomic import write_text_atomic
from molwm.baselines import morgan_fingerprints
from molwm.checkpoints import load_checkpoint
from molwm.config import from_dict
from molwm.data.batch import GraphBatch
from molwm.data.mm_profiles import CLIP, plain_smiles
from molwm.data.mm_sources import build_multimodal_data
from molwm.data.multimodal import MultimodalBatch
from molwm.data.profile_cards import load_profile_set
from molwm.data.profile_store import ProfileBatch, dose_code
from molwm.jepa.mm_masking import MultimodalMasks, add_pe
from molwm.jepa.modalities import TokenMask, modality_index
from molwm.pretraining import load_pretrain_config
from molwm.tasks.map_metrics import phenotypic_activity
from molwm.train.pretrain_mm import (
    MultimodalPretrainConfig,
    build_objective_model,
    run_multimodal_pretrain,
)

CONFIG = Path(__file__).resolve().parents[1] / "configs/pretrain/profiles_cell_injury.yaml"


def _profiles(stats: dict, y: np.ndarray, dose_uM: np.ndarray, time_h: np.ndarray) -> ProfileBatch:
    z = np.clip((y - np.asarray(stats["mean"])) / np.asarray(stats["std"]), -CLIP, CLIP)
    n = len(y)
    return ProfileBatch(torch.tensor(z, dtype=torch.float32), torch.from_numpy(dose_code(dose_uM)),
                        torch.tensor(time_h, dtype=torch.float32), torch.zeros(n, dtype=torch.bool))


@torch.no_grad()
def embeddings(model, stats: dict, cond, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(predicted [n, D] from graph + dose + time, target [n, D] of the profile)`` per condition."""
    model.eval()
    arrays, bad = featurize_arrays([plain_smiles(s) for s in cond["smiles"]])
    assert not bad and len(arrays) == len(cond)
    n = len(cond)
    part = _profiles(stats, y, cond["dose"].to_numpy(float), cond["time_h"].to_numpy(float))
    rows = torch.arange(n)
    keys = MultimodalBatch(size=n, index=rows).put("profile", part, rows)
    target, _ = model.modality_embedding(keys, "profile")
    batch = MultimodalBatch(size=n, index=rows).put("graph", GraphBatch.from_arrays(arrays, np.arange(n)), rows)
    batch.put("profile", part, rows)
    add_pe(batch, model.config, torch.Generator().manual_seed(0))
    tokens = model.encoders["profile"].n_tokens
    j = modality_index("profile")
    hidden = TokenMask(keep=torch.zeros(n, tokens, dtype=torch.bool), target=torch.ones(n, tokens, dtype=torch.bool))
    masks = MultimodalMasks(hidden=torch.full((n,), j), dropped=torch.full((n,), -1), parts={"profile": hidden})
    (q,) = model.hidden_queries(batch, masks)
    context = model.context(batch, masks)  # the graph alone: every profile token is hidden
    (pred,), _ = model.predictor(context, [(q.modality, q.pos, q.pad)], masks.hidden)  # [n, C, D]
    pred = F.layer_norm(pred.mean(1), (model.config.dim,))
    return pred.numpy(), target.numpy()


@torch.no_grad()
def activity(model, stats: dict, wells, fold_of: dict, k: int, null_size: int) -> list[dict]:
    """Phenotypic activity mAP (each treated well retrieves its condition's other wells against every DMSO
    well) of the held-out compounds' wells: raw standardised features vs the target embedding."""
    w = wells.wells
    ctl = w["is_control"].to_numpy(bool)
    rows = np.flatnonzero(ctl | (w["compound_id"].map(fold_of).to_numpy() == k))
    part = _profiles(stats, wells.features[rows], w["dose_uM"].to_numpy(float)[rows], w["time_h"].to_numpy(float)[rows])
    n = len(rows)
    z, _ = model.modality_embedding(MultimodalBatch(size=n, index=torch.arange(n)).put("profile", part,
                                                                                      torch.arange(n)), "profile")
    group = (w["compound_id"] + "|" + [f"{d:.3g}" for d in w["dose_uM"]] + "|" + w["time_h"].astype(str)).to_numpy()
    out = []
    for name, x in (("raw_features", part.values.numpy()), ("target_embedding", z.numpy())):
        s = phenotypic_activity(x, group[rows], ctl[rows], null_size=null_size)
        out.append({"task": "map_activity_heldout", "method": name, "dim": int(x.shape[1]), "map": s.map,
                    "retrieved": s.retrieved, "n_groups": s.n_groups})
    return out


def run_fold(args, wells, cond, y, fold_of, seed: int, k: int, chunk: int) -> list[dict]:
    parts = {c: ("test" if f == k else "train") for c, f in fold_of.items()}
    te = cond["compound_id"].map(fold_of).to_numpy() == k
    config = load_pretrain_config(CONFIG, [f"max_steps={args.steps}", f"objective={args.objective}",
                                           f"model.modality_settings.profile.chunk={chunk}", f"seed={seed}",
                                           f"out_dir={args.out}/runs/s{seed}-f{k}-c{chunk}", "log_every=50",
                                           f"data.profiles={rp.SETS[args.set][0]}"])
    build = build_multimodal_data(config.data, progress=False, profile_parts=parts)
    start = time.perf_counter()
    result = run_multimodal_pretrain(config, progress=False, data=build)
    seconds = time.perf_counter() - start
    state = load_checkpoint(result.checkpoint)
    cfg = from_dict(MultimodalPretrainConfig, state["config"])
    model = build_objective_model(cfg, 1)
    model.load_state_dict(state["model"])
    pred, target = embeddings(model, state["profile_stats"], cond[te].reset_index(drop=True), y[te])
    base = {"task": "retrieval", "seed": seed, "fold": k, "chunk": chunk, "steps": args.steps,
            "train_seconds": round(seconds, 1), "dim": int(target.shape[1])}
    rows = [{**base, "method": f"molwm_{args.objective}", **rp.rank_scores(pred, target)}]
    tr = ~te
    bits = {c: b for c, b in zip(cond["compound_id"], morgan_fingerprints(list(cond["smiles"])))}
    x = rp.design(np.stack([bits[c] for c in cond["compound_id"]]), cond)
    _, t_all = embeddings(model, state["profile_stats"], cond, y)
    alpha = rp.choose_alpha(x[tr], y[tr], cond[tr].reset_index(drop=True), seed)
    rows.append({**base, "method": "ridge_morgan", **rp.rank_scores(rp.fit_ridge(x[tr], y[tr], alpha)(x[te]), y[te])})
    rows.append({**base, "method": "ridge_on_embedding",
                 **rp.rank_scores(rp.fit_ridge(x[tr], t_all[tr], alpha)(x[te]), target)})
    rows.append({**base, "method": "nn_tanimoto", **rp.rank_scores(rp.nn_profiles(cond, y, bits, tr, te), y[te])})
    rows.append({**base, "method": "chance", **rp.chance_scores(int(te.sum()))})
    if args.map:
        rows += [{**base, **r} for r in activity(model, state["profile_stats"], wells, fold_of, k, 1000)]
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--set", default="cell_injury", choices=sorted(rp.SETS))
    p.add_argument("--seeds", default="0")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--fold-list", default="0")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--chunks", default="0")
    p.add_argument("--objective", default="jepa")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--map", action="store_true", help="also the held-out wells' activity mAP, raw vs embedding")
    p.add_argument("--out", default="outputs/bench/real_profiles_molwm")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    wells = load_profile_set(rp.SETS[args.set][0])
    cond, y = rp.conditions(wells.wells, wells.features)
    comps = cond.drop_duplicates("compound_id")
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        folds = rp.scaffold_folds(list(comps["smiles"]), args.folds, seed)
        fold_of = dict(zip(comps["compound_id"], folds))
        for k in (int(f) for f in args.fold_list.split(",")):
            for chunk in (int(c) for c in args.chunks.split(",")):
                for r in run_fold(args, wells, cond, y, fold_of, seed, k, chunk):
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"{args.set}_{args.objective}.json", json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
