"""The base of every molwm error: one class the command line catches.

This module imports nothing from molwm, so any module can import it without a cycle.
"""

from __future__ import annotations


class MolwmError(Exception):
    """Bad input or a failed run that the CLI reports in one line and exit code 2.

    Each module's error subclasses this and keeps its historical base (``ValueError``,
    ``RuntimeError``), so existing ``except ValueError`` handlers keep working.
    """


class RequestError(MolwmError, ValueError):
    """A request a served model cannot answer as asked (a missing column, an unknown parameter):
    the client's to fix, answered as HTTP 400 with this message."""
