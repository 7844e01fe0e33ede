"""``molwm index build``: embed a reference set (or read the embeddings a sharded query made) and index it.

The reference is a dataset card, a candidates file, or the output folder of ``molwm query --engine ray
--what embed`` by the same model (its manifest records the model's digest; the embeddings are read, not
recomputed). The index is written to a folder and logged as the MLflow artifact ``index`` of a run, so
``runs:/<run_id>/index`` names it anywhere the store is reachable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from molwm.data.cache import cache_root
from molwm.query import MoleculeModel, ReferenceSet
from molwm.screening.index import write_index
from molwm.screening.shards import MANIFEST, ScreeningError
from molwm.tracking import NullTracker, Tracker


@dataclass
class BuiltIndex:
    """What ``molwm index build`` made.

    Attributes:
        folder: The index folder on this machine.
        meta: Its ``index.json``.
        uri: ``runs:/<run_id>/index`` when it was logged to MLflow, else None.
    """

    folder: Path
    meta: dict
    uri: str | None

    def summary(self) -> str:
        """One line: size, backend, recall, times."""
        m = self.meta
        return (f"indexed {m['n']:,} reference molecules of {m['reference']} ({m['dim']} dims) with {m['backend']} "
                f"in {m['build_seconds']:.1f} s: recall@10 {m['recall_at_10']:.3f} against exact search; "
                f"1,000 queries in {m['query_1000_seconds'] * 1000:.0f} ms -> {self.folder}")


def reference_from_shards(folder: Path, model: MoleculeModel, progress: bool = False) -> ReferenceSet:
    """The embeddings a ``--engine ray --what embed`` job wrote, as a reference set (ok rows only).

    Raises:
        ScreeningError: The job is unfinished, did not embed, or used another model.
    """
    saved = json.loads((folder / MANIFEST).read_text())
    job = saved.get("job", {})
    if not saved.get("complete"):
        raise ScreeningError(f"{folder}: the query job is not complete; rerun it before indexing its embeddings")
    if "embed" not in job.get("what", []):
        raise ScreeningError(f"{folder}: the query job did not embed (--what {','.join(job.get('what', []))})")
    if job.get("model_digest") != model.digest:
        raise ScreeningError(f"{folder}: embedded by another model (digest {str(job.get('model_digest'))[:12]}), "
                             f"not {model.source} (digest {model.digest[:12]})")
    smiles, ids, unit = [], [], []
    for name in tqdm(sorted(saved["shards"]), desc=f"reading {folder.name}", unit="shard", disable=not progress):
        table = pq.read_table(folder / name)
        cols = [c for c in table.column_names if c.startswith("emb_")]
        ok = np.asarray(table.column("status").to_numpy(zero_copy_only=False) == "ok")
        emb = np.stack([table.column(c).to_numpy() for c in cols], axis=1)[ok]  # [n_ok, E]
        unit.append(emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12))
        smiles.append(table.column("smiles").to_numpy(zero_copy_only=False)[ok])
        ids.append(table.column("id").to_numpy(zero_copy_only=False)[ok])
    return ReferenceSet(folder.name, np.concatenate(smiles).astype(object), np.concatenate(ids).astype(object),
                        np.concatenate(unit))


def build_index(model: str, reference: str, output: str | Path | None = None, name: str | None = None,
                backend: str = "auto", settings: dict | None = None, tracker: Tracker | None = None,
                progress: bool = True) -> BuiltIndex:
    """Embed ``reference`` with ``model`` (or read a sharded query's embeddings) and write its index.

    Args:
        model: Any model URI ``molwm query`` takes.
        reference: A dataset name, a candidates file, or a ``--engine ray --what embed`` output folder.
        output: The index folder (default: ``<molwm cache>/indexes/<name>-<model digest>``).
        name: A name for the index (default: the reference's).
        backend: ``auto``, ``exact``, ``usearch`` or ``faiss-hnsw``.
        settings: Backend settings over its defaults.
        tracker: Logs the build's figures and the folder as the artifact ``index``.
        progress: Progress bars while embedding.
    """
    tracker = tracker or NullTracker()
    wm = MoleculeModel.load(model)
    folder = Path(str(reference))
    if folder.is_dir() and (folder / MANIFEST).is_file():
        ref = reference_from_shards(folder, wm, progress)
    else:
        ref = wm.reference(reference, progress=progress)
    if len(ref) == 0:
        raise ScreeningError(f"reference {reference}: no molecule could be embedded")
    name = name or ref.name
    out = Path(output) if output else cache_root() / "indexes" / f"{Path(name).stem}-{wm.digest[:12]}"
    with tracker.run(f"index-{Path(name).stem}", tags={"kind": "vector-index"}):
        meta = write_index(out, ref, wm, backend, settings)
        tracker.log_params({"model": model, "model_digest": wm.digest, "reference": str(reference),
                            "backend": meta["backend"], **{f"settings.{k}": v for k, v in meta["settings"].items()}})
        tracker.log_metrics({"n": meta["n"], "dim": meta["dim"], "build_seconds": meta["build_seconds"],
                             "recall_at_10": meta["recall_at_10"], "query_1000_seconds": meta["query_1000_seconds"]})
        for f in sorted(out.iterdir()):
            tracker.log_artifact(f, "index")
        uri = f"runs:/{tracker.run_id}/index" if tracker.run_id else None
    return BuiltIndex(out.resolve(), meta, uri)
