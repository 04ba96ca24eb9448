"""`UserError` as the engines and training code has always imported it; it lives in :mod:`ground.errors`."""

from ground.errors import UserError

__all__ = ["UserError"]
