"""Small pieces every ``molwm`` subcommand module shares (stdlib only: building the parser stays fast)."""

from __future__ import annotations

import argparse


def quiet_flags(p: argparse.ArgumentParser) -> None:
    """``--no-track`` and ``--no-progress``."""
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def print_chain(run_id, model_uri) -> None:
    """``run_id:`` and ``model_uri:`` on lines of their own, so scripts can chain pretrain -> finetune -> query."""
    print(f"run_id: {run_id}")
    print(f"model_uri: {model_uri}")


def one_line(message: str) -> str:
    """``message`` with its lines joined: every CLI error is one line."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())
