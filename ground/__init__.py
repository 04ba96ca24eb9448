"""The ground every layer stands on: the error a person can act on, YAML with line numbers, threshold choice.

Depends on nothing of ours (numpy, PyYAML and pydantic only), so `engines`, `calibration`, `training` and
`inspector` can all use it without importing one another.
"""

from ground.errors import UserError

__all__ = ["UserError"]
