"""``molwm data prepare``: resolve a card, featurize, cache, report rejects, track."""

from __future__ import annotations

import json
import resource
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from featurizers.errors import Reject, count_reject_codes, write_rejects
from featurizers.molecule import DEFAULT_MAX_SMILES_LENGTH, GRAPH_SPEC, iter_featurized_chunks, resolve_n_jobs
from molwm.atomic import disk_full, is_disk_full
from molwm.data.cache import (CACHE_FORMAT, CorruptCacheError, GraphCache, ShardWriter, build_lock, cache_key,
                              cache_root, publish, staging_dir)
from molwm.data.descriptors import DescriptorTable, prepare_descriptors
from molwm.data.registry import DatasetCard, get_card
from molwm.data.sources import READ_ERROR, load_table, source_digest
from molwm.tracking import NullTracker, Tracker


@dataclass
class PrepareConfig:
    """Options of ``molwm data prepare``.

    Attributes:
        dataset: Card name or path to a card YAML.
        limit: Keep only the first N rows (None: all).
        n_jobs: Featurization processes; <= 0 uses every core.
        chunk_size: Molecules per unit of parallel work.
        shard_size: Molecules per on-disk shard.
        max_smiles_length: Longer SMILES are rejected.
        largest_fragment: Keep only the largest fragment of salts and mixtures.
        cache_dir: Cache root; default ``$MOLWM_CACHE`` or ``~/.cache/molwm``.
        force: Rebuild even if a complete cache exists.
        verify_checksums: Check source files against the card's SHA-256.
        progress: Show a progress bar.
        experiment: MLflow experiment name.
        descriptors: Also compute the descriptor targets (:mod:`molwm.data.descriptors`) beside
            the graph shards (once; a later call reuses them).
    """

    dataset: str
    limit: int | None = None
    n_jobs: int = 0
    chunk_size: int = 2000
    shard_size: int = 100_000
    max_smiles_length: int = DEFAULT_MAX_SMILES_LENGTH
    largest_fragment: bool = False
    cache_dir: str | None = None
    force: bool = False
    verify_checksums: bool = True
    progress: bool = True
    experiment: str = "molwm-data"
    descriptors: bool = False

    def validate(self) -> None:
        from molwm.config import ConfigError

        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"limit must be positive, got {self.limit}")
        for name in ("chunk_size", "shard_size", "max_smiles_length"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass
class PrepareResult:
    """What a prepare run produced.

    Attributes:
        card: The dataset card.
        cache: The complete on-disk cache.
        n_input: Rows read from the source.
        n_ok: Molecules featurized.
        rejects: Inputs not featurized (also in ``rejects.csv``).
        seconds: Wall time of this call (near zero on a cache hit).
        cache_hit: True if an existing cache was reused.
        peak_rss_mb: Peak resident memory of this process and its workers.
    """

    card: DatasetCard
    cache: GraphCache
    n_input: int
    n_ok: int
    rejects: list[Reject]
    seconds: float
    cache_hit: bool
    peak_rss_mb: float = 0.0
    reject_counts: dict[str, int] = field(default_factory=dict)
    descriptors: DescriptorTable | None = None

    @property
    def rejects_path(self) -> Path:
        return self.cache.path / "rejects.csv"

    def summary(self) -> str:
        """One line a person reads after the command."""
        codes = ", ".join(f"{k}: {v}" for k, v in self.reject_counts.items()) or "none"
        feat_s = float(self.cache.manifest.get("featurize_seconds", 0.0))
        rate = self.n_input / feat_s if feat_s > 0 else 0.0
        how = "cache hit" if self.cache_hit else f"{self.seconds:.1f} s in all, featurized at {rate:,.0f} mol/s"
        return (
            f"{self.card.name}: {self.n_input:,} read, {self.n_ok:,} featurized, "
            f"{len(self.rejects):,} rejected ({codes}); {how}; cache {self.cache.path}"
            + (f"; {len(self.descriptors.names)} descriptors per molecule ({self.descriptors.path.name})"
               if self.descriptors is not None else "")
        )


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0  # Linux reports KiB


def prepare_dataset(config: PrepareConfig, tracker: Tracker | None = None,
                    extra_card_dirs: tuple[str, ...] = ()) -> PrepareResult:
    """Resolve, featurize and cache a dataset, writing a rejects report.

    Args:
        config: What to prepare.
        tracker: Where to log (params, counts by reject reason, timings,
            rejects report, card, dataset digest). Default: log nothing.
        extra_card_dirs: Additional folders with dataset cards.

    Returns:
        A :class:`PrepareResult`; its ``cache`` reads the graphs back.
    """
    tracker = tracker or NullTracker()
    start = time.perf_counter()
    card = get_card(config.dataset, extra_card_dirs)
    # the cache key needs only the files' checksums: on a hit the source table (1.6M rows for
    # MOSES) is not read at all unless a real tracker logs it as the run's dataset
    digest = source_digest(card, config.verify_checksums)
    table = None if digest is not None else load_table(card, limit=config.limit, verify=config.verify_checksums)
    digest = digest if table is None else table.digest
    key = cache_key(digest, config.limit, GRAPH_SPEC, max_smiles_length=config.max_smiles_length,
                    largest_fragment=config.largest_fragment)
    directory = cache_root(config.cache_dir) / card.name / key
    tags = {"molwm.stage": "data.prepare", "dataset": card.name, "cache_key": key}
    with tracker.run(f"prepare-{card.name}", tags=tags):
        tracker.log_config(config)
        tracker.log_params({"featurizer.spec_digest": GRAPH_SPEC.digest(), "featurizer.version": GRAPH_SPEC.version,
                            "source.digest": digest, "n_jobs_resolved": resolve_n_jobs(config.n_jobs)})
        # one build per key at a time: a second process waits here, then finds the first one's cache
        with build_lock(directory):
            cache = None if config.force else _complete_cache(directory)
            cache_hit = cache is not None
            if table is None and (not cache_hit or not isinstance(tracker, NullTracker)):
                table = load_table(card, limit=config.limit, verify=config.verify_checksums)
            if cache_hit:
                from featurizers.errors import read_rejects

                rejects = read_rejects(directory / "rejects.csv")
            else:
                cache, rejects = _build(config, card, table, key, directory)
        descriptors = prepare_descriptors(cache, config.n_jobs, config.progress) if config.descriptors else None
        seconds = time.perf_counter() - start
        counts = count_reject_codes(rejects)
        n_input = len(table.frame) if table is not None else int(cache.manifest["n_input"])
        result = PrepareResult(card, cache, n_input, len(cache), rejects, seconds, cache_hit, _peak_rss_mb(), counts,
                               descriptors)
        metrics = {
            "n_input": result.n_input,
            "n_ok": result.n_ok,
            "n_rejected": len(rejects),
            "seconds": seconds,
            "cache_hit": float(cache_hit),
            "peak_rss_mb": result.peak_rss_mb,
            "disk_mb": cache.disk_bytes() / 2**20,
        }
        feat_s = float(cache.manifest.get("featurize_seconds", 0.0))
        if not cache_hit and feat_s > 0:
            metrics["featurize_seconds"] = feat_s
            metrics["mol_per_s"] = result.n_input / feat_s
        metrics.update({f"rejected.{code}": n for code, n in counts.items()})
        if descriptors is not None:
            metrics["descriptors.seconds"] = float(descriptors.manifest["seconds"])
            metrics["descriptors.n"] = len(descriptors.names)
            tracker.log_artifact(descriptors.path / "manifest.json", "data/descriptors")
        tracker.log_metrics(metrics)
        tracker.log_artifact(directory / "rejects.csv", "data")
        tracker.log_artifact(directory / "manifest.json", "data")
        if card.card_path:
            tracker.log_artifact(card.card_path, "data")
        targets = card.columns.target_names[0] if len(card.columns.target_names) == 1 else None
        if table is not None:
            tracker.log_dataset(table.frame, name=card.name, source=_source_uri(card, table), digest=digest,
                                targets=targets)
    return result


def _source_uri(card: DatasetCard, table) -> str:
    if table.files:
        return table.files[0].resolve().as_uri()
    return f"deepchem-molnet:{card.source.loader}"


def _complete_cache(directory: Path) -> GraphCache | None:
    """The complete cache at ``directory``; ``None`` when there is none, or (with a warning) when its files
    do not match the manifest's sizes and checksums, so the caller rebuilds it."""
    if not (directory / "manifest.json").is_file():
        return None
    try:
        cache = GraphCache.open(directory)
        problems = cache.verify()
    except CorruptCacheError as err:
        problems = [str(err)]
    if not problems:
        return cache
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    warnings.warn(f"cache at {directory}: {problems[0]}{more}; rebuilding it", stacklevel=3)
    return None


def _build(config: PrepareConfig, card: DatasetCard, table, key: str, directory: Path):
    """Featurize into a private staging folder and move it to ``directory`` whole (call under the lock).

    A failed build removes its staging folder; a full disk is one :class:`DiskFullError` line.
    """
    staging = staging_dir(directory)
    try:
        return _build_in(config, card, table, key, staging, directory)
    except BaseException as err:
        written = sum(f.stat().st_size for f in staging.rglob("*") if f.is_file()) if staging.exists() else 0
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(err):
            raise disk_full(err, directory, None, written) from None
        raise


def _read_errors(frame) -> dict[int, Reject]:
    """Rows whose source line could not be split into fields (see :mod:`molwm.data.csv_rows`), as rejects."""
    if READ_ERROR not in frame.columns:
        return {}
    return {int(i): Reject(int(i), "", str(why), "malformed_line")
            for i, why in frame[READ_ERROR].items() if isinstance(why, str)}


def _build_in(config: PrepareConfig, card: DatasetCard, table, key: str, directory: Path, final: Path):
    from tqdm.auto import tqdm

    frame = table.frame
    smiles = frame["smiles"].tolist()
    read_errors = _read_errors(frame)
    writer = ShardWriter(directory, config.shard_size, frame)
    rejects: list[Reject] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(smiles), desc=f"featurize {card.name}", unit="mol", disable=not config.progress,
               mininterval=1.0)
    for _, _, arrays, rej in iter_featurized_chunks(
        smiles, config.n_jobs, config.chunk_size, config.max_smiles_length,
        largest_fragment=config.largest_fragment,
    ):
        writer.add(arrays)
        rejects.extend(read_errors.get(r.index, r) for r in rej)
        bar.update(len(arrays) + len(rej))
    bar.close()
    shards = writer.close()
    write_rejects(rejects, directory / "rejects.csv")
    n_ok = sum(s["n"] for s in shards)
    manifest = {
        "format": CACHE_FORMAT,
        "key": key,
        "dataset": card.name,
        "source_digest": table.digest,
        "source_files": [str(p) for p in table.files],
        "limit": config.limit,
        "max_smiles_length": config.max_smiles_length,
        "largest_fragment": config.largest_fragment,
        "spec": GRAPH_SPEC.to_dict(),
        "spec_digest": GRAPH_SPEC.digest(),
        "targets": card.columns.target_names,
        "task": card.task.type,
        "n_input": len(smiles),
        "n_ok": n_ok,
        "n_rejected": len(rejects),
        "reject_counts": count_reject_codes(rejects),
        "featurize_seconds": time.perf_counter() - t0,
        "shards": shards,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    publish(directory, final)  # the folder appears complete under its key, or not at all
    return GraphCache.open(final), rejects
