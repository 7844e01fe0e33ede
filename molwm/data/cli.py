"""``molwm data list|show|prepare|compact``: dataset cards, sources, featurization caches, compact real sets.

Thin: parse flags, call :mod:`molwm.data.info` or :func:`molwm.data.prepare.prepare_dataset`, print.
Wire it into the main parser with ``add_parsers(subparsers)``; the library is imported by the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

from molwm.cli_common import quiet_flags


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def cmd_data_list(args) -> int:
    from molwm.data.info import dataset_listing

    listing = dataset_listing(args.cards, args.cache_dir)
    statuses = listing.statuses
    rows = []
    for s in statuses:
        c = s.card
        rows.append([
            c.name,
            c.task.type + (f" ({c.task.metric})" if c.task.metric else ""),
            f"{c.size:,}" if c.size else "?",
            c.source.kind,
            "yes" if s.available else "no",
            str(len(s.prepared)),
            c.license,
        ])
    # a card file that cannot be read is a row of its own (named by its file), not the end of the listing
    rows += [[Path(b.path).stem, "?", "?", "?", "broken", "?", "?"] for b in listing.broken]
    _print_table(rows, ["name", "task", "size", "source", "available", "prepared", "license"])
    missing = [s for s in statuses if not s.available]
    for s in missing:
        print(f"  {s.card.name}: {s.detail}")
    for b in listing.broken:
        print(f"  {Path(b.path).stem}: broken card: {b.error}")
    return 0


def cmd_data_show(args) -> int:
    from molwm.data.info import show_dataset
    from molwm.data.registry import DatasetError

    s = show_dataset(args.name, args.cards, args.cache_dir)
    c = s.card
    print(f"{c.name}: {c.description.strip()}")
    print(f"  card:      {c.card_path}")
    print(f"  task:      {c.task.type}" + (f", metric {c.task.metric}" if c.task.metric else "")
          + (f", units {c.task.units}" if c.task.units else ""))
    print(f"  columns:   smiles={c.columns.smiles!r} targets={c.columns.target_names} id={c.columns.id!r}")
    print(f"  source:    {c.source.kind}: {s.detail}")
    for f in c.source.files:
        print(f"    - {f.path}  sha256={f.sha256 or 'not set'}")
    print(f"  license:   {c.license}")
    print(f"  citation:  {' '.join(c.citation.split())}")
    if c.url:
        print(f"  url:       {c.url}")
    if s.n_rows is not None:
        print(f"  rows:      {s.n_rows:,} (checksums verified)")
    elif c.size:
        print(f"  rows:      {c.size:,} (from the card)")
    if s.preview is not None:
        print("  preview:")
        for line in s.preview.to_string(max_colwidth=60).splitlines():
            print("    " + line)
    if s.prepared:
        print("  prepared caches:")
        for m in s.prepared:
            limit = m["limit"] if m["limit"] is not None else "all"
            print(f"    - limit {limit}: {m['n_ok']:,} graphs, {m['n_rejected']:,} rejected -> {m['path']}")
    else:
        print(f"  prepared caches: none (run: molwm data prepare {c.name})")
    if s.error:  # the data is there but is not what the card describes: the card is shown, the exit code says so
        raise DatasetError(s.error)
    return 0


def cmd_data_prepare(args) -> int:
    from molwm.config import load_config
    from molwm.data.prepare import PrepareConfig, prepare_dataset
    from molwm.tracking import make_tracker

    flags = {"dataset": args.name}
    for key in ("limit", "n_jobs", "cache_dir", "shard_size", "max_smiles_length", "experiment"):
        value = getattr(args, key)
        if value is not None:
            flags[key] = value
    if args.force:
        flags["force"] = True
    if args.no_progress:
        flags["progress"] = False
    config = load_config(PrepareConfig, args.config, args.overrides, flags=flags)
    tracker = make_tracker(not args.no_track, experiment=config.experiment)
    result = prepare_dataset(config, tracker, tuple(args.cards))
    print(result.summary())
    print(f"rejects report: {result.rejects_path}")
    if not args.no_track:
        print(f"tracked in MLflow ({tracker.tracking_uri}), experiment '{config.experiment}'")
    return 0


def cmd_data_compact(args) -> int:
    from molwm.data.real_subset import build_compact

    result = build_compact(args.name, args.out, args.data_dir, check=args.check, progress=not args.no_progress)
    print(f"{result.summary['wells']:,} wells on {result.summary['plates']} plates, "
          f"{result.summary['compounds']} compounds; {result.rejects} wells rejected (reasons in the report)")
    for path, digest in result.files.items():
        pinned = result.pinned.get(path.rsplit("/", 1)[-1])
        state = "matches the card" if pinned == digest else f"DIFFERS from the card's {pinned or '(none)'}"
        print(f"  {path}  sha256 {digest}  {state}")
    if args.check and not result.matches:
        print("molwm: error: the rebuilt compact files differ from the pinned ones", file=sys.stderr)
        return 1
    return 0


def add_parsers(sub) -> None:
    """Add the ``data`` command (``list``, ``show``, ``prepare``) to an argparse subparsers object."""
    data = sub.add_parser("data", help="dataset cards, sources and featurization caches")
    dsub = data.add_subparsers(dest="data_command", required=True)

    def common(p):
        p.add_argument("--cards", action="append", default=[], metavar="DIR",
                       help="extra folder of dataset cards (repeatable; also $MOLWM_DATASETS)")
        p.add_argument("--cache-dir", default=None, help="cache root (default $MOLWM_CACHE or ~/.cache/molwm)")

    p = dsub.add_parser("list", help="list known datasets (Python: molwm.data.info.list_datasets)")
    common(p)
    p.set_defaults(func=cmd_data_list)

    p = dsub.add_parser("show", help="show one dataset card (Python: molwm.data.info.show_dataset)")
    p.add_argument("name", help="card name or path to a card YAML")
    common(p)
    p.set_defaults(func=cmd_data_show)

    p = dsub.add_parser(
        "prepare",
        help="featurize and cache a dataset (Python: molwm.data.prepare.prepare_dataset)",
        epilog="Any PrepareConfig key can also be set as key=value, e.g. shard_size=50000.",
    )
    p.add_argument("name", help="card name or path to a card YAML")
    p.add_argument("--limit", type=int, default=None, help="featurize only the first N rows")
    p.add_argument("--n-jobs", dest="n_jobs", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--shard-size", dest="shard_size", type=int, default=None)
    p.add_argument("--max-smiles-length", dest="max_smiles_length", type=int, default=None)
    p.add_argument("--config", default=None, help="YAML with PrepareConfig keys")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default molwm-data)")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    quiet_flags(p)
    common(p)
    p.set_defaults(func=cmd_data_prepare)

    p = dsub.add_parser("compact", help="rebuild the compact real-cell files molwm ships from the raw public "
                                        "files (Python: molwm.data.real_subset.build_compact)")
    p.add_argument("name", help="the raw card, e.g. lincs_cellpainting_batch2")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="local mirror folder holding the raw files (also $MOLWM_DATA_MIRROR)")
    p.add_argument("--out", default=None, metavar="DIR", help="where to write (default: beside the compact card)")
    p.add_argument("--check", action="store_true", help="rebuild into a temporary folder and compare digests")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_compact)
