"""Modality encoders: each turns one modality's inputs into :class:`Tokens` of width ``D``."""

from molwm.encoders.tokens import Tokens

__all__ = ["Tokens"]
