"""Locating the data files shipped with edgeq (targets/, calibration/, examples/digits/)."""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent.parent
_PACKAGED = Path(__file__).resolve().parent.parent


def data_dir(kind: str) -> Path:
    """Folder of shipped data ``kind`` ("targets", "calibration" or "examples/digits").

    In a source checkout or editable install the top-level folder is used; in an installed wheel the copy that
    setuptools put into the package (edgeq._targets, edgeq._recipes, edgeq._examples).
    """
    packaged = {"targets": "_targets", "calibration": "_recipes", "examples/digits": "_examples"}[kind]
    for candidate in (_ROOT / kind, _PACKAGED / packaged):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"edgeq's {kind} folder is missing from this installation; reinstall edgeq")
