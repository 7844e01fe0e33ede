"""``molwm tracking replay``: send what a run could not log while its tracking store was down.

Thin: parse flags, call :func:`molwm.tracking.replay_outbox`, print. Wire it into the main parser with
``add_parser(subparsers)``; the library is imported by the command.
"""

from __future__ import annotations

import argparse


def cmd_tracking_replay(args) -> int:
    """Exit code 0 when everything was sent, 1 when the store stopped answering (what is left stays in the
    file: run it again later); a missing or bad file is a one-line error and exit code 2 (in ``main``)."""
    from molwm.tracking import default_tracking_uri, replay_outbox

    store = args.tracking_uri or default_tracking_uri()
    result = replay_outbox(args.file, store)
    print(f"store: {store}")
    print(result.summary())
    return 1 if result.left else 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``tracking`` command (subcommand ``replay``) to an argparse subparsers object.

    Returns:
        The ``tracking`` parser.
    """
    tracking = subparsers.add_parser("tracking", help="the tracking store: send what a run could not log")
    tsub = tracking.add_subparsers(dest="tracking_command", required=True)
    p = tsub.add_parser(
        "replay", help="send a run's kept tracker calls to the store (Python: molwm.tracking.replay_outbox)",
        description="While the tracking store is unreachable, a run keeps what it could not log (metrics, params, "
                    "tags, artifacts, models, its end) in $MOLWM_TRACKING_OUTBOX/<run id>/outbox.jsonl (default "
                    "./mlflow-outbox); the run's last warning names the file. This sends it, in order, into the "
                    "same run. Exit code 0: all sent (the file is removed); 1: the store stopped answering "
                    "(the rest stays in the file); 2: a missing or bad file.")
    p.add_argument("file", metavar="FILE", help="an outbox.jsonl, or the run folder holding it")
    p.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="the store the run logged to (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.set_defaults(func=cmd_tracking_replay)
    return tracking
