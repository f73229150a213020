"""What every package folder has: ``package.json``, the manifest that lists and checks its files.

``package.json`` (``"format": "edgeq-package"``, ``"format_version": 1``)::

    {
      "format": "edgeq-package", "format_version": 1, "edgeq_version": "0.1.0",
      "target": {"name": "raspberry-pi-4", "kind": "sbc", "description": "...", "runtimes": [...]},
      "kind": "sbc",
      "models": {"int8": {"file": "model.int8.onnx", "format": "onnx", ...}, "float": {...}},
      ... (the packager's own entries: runner, requirements, notes ...)
      "files": [{"path": "model.int8.onnx", "bytes": 12345, "sha256": "..."}, ...]
    }

``models`` maps a role (``int8``, ``float``, ``tflite`` …) to a file and what it needs; ``files`` lists every
file in the folder except package.json itself, sorted, with its size and SHA-256, so a copied package can be
checked (:meth:`Package.load`). No timestamps: identical inputs give a byte-identical package.json.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq import fileio
from edgeq.config import Target
from edgeq.errors import ModelError

MANIFEST = "package.json"
FORMAT = "edgeq-package"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Package:
    """A package folder: where it is, which target it is for, its files (relative paths) and its manifest."""

    path: Path
    target: str
    files: tuple[str, ...]
    manifest: Mapping[str, Any] = field(compare=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, verify: bool = True) -> Package:
        """Read ``path``/package.json; with ``verify`` check every listed file's size and SHA-256."""
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise ModelError(f"{path}: not an edgeq package (no {MANIFEST}); create one with `edgeq package`")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelError(f"{manifest_path}: unreadable ({e}); re-run `edgeq package`") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ModelError(f"{manifest_path}: not an edgeq package manifest; re-run `edgeq package`")
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise ModelError(
                f"{manifest_path}: package format {manifest['format_version']} is newer than this edgeq "
                f"understands ({FORMAT_VERSION}); upgrade edgeq"
            )
        entries = manifest.get("files", [])
        if verify:
            for entry in entries:
                _verify(path, entry)
        files = (*(e["path"] for e in entries), MANIFEST)
        return cls(path=path, target=manifest["target"]["name"], files=files, manifest=manifest)

    def model(self, role: str) -> Path:
        """The file of model ``role`` (``int8``, ``float``, ``tflite``); a ModelError if there is none."""
        models = self.manifest.get("models", {})
        if role not in models:
            have = ", ".join(sorted(models)) or "none"
            hint = " (package again with --float FLOAT.onnx)" if role == "float" else ""
            raise ModelError(f"{self.path}: the package has no {role} model (it has: {have}){hint}")
        return self.path / models[role]["file"]

    def has(self, role: str) -> bool:
        return role in self.manifest.get("models", {})


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(root: Path, entry: Mapping[str, Any]) -> None:
    rel = entry.get("path", "")
    file = (root / rel).resolve()
    if os.path.isabs(rel) or root.resolve() not in file.parents:
        raise ModelError(
            f"{root / MANIFEST}: file entry '{rel}' points outside the package; re-run edgeq package"
        )
    if not file.is_file():
        raise ModelError(f"{root}: {rel} is missing from the package; copy the whole folder or package again")
    if file.stat().st_size != entry.get("bytes") or sha256_file(file) != entry.get("sha256"):
        raise ModelError(
            f"{root}: {rel} differs from what {MANIFEST} lists (size or SHA-256); the copy is damaged or "
            "the file was edited: copy the folder again or re-run `edgeq package`"
        )


def list_files(folder: str | os.PathLike[str]) -> list[str]:
    """Every file under ``folder`` as a sorted POSIX relative path, package.json excluded."""
    folder = Path(folder)
    found = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    return sorted(f for f in found if f != MANIFEST)


def write_manifest(
    folder: str | os.PathLike[str], *, target: Target, manifest: Mapping[str, Any]
) -> tuple[str, ...]:
    """Write ``folder``/package.json for the files now in ``folder``; returns all file names, manifest last.

    ``manifest`` is what the packager returned (``kind``, ``models`` …); ``format``, ``target`` and ``files``
    are filled in here.
    """
    from edgeq import __version__

    folder = Path(folder)
    files = list_files(folder)
    data: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "edgeq_version": __version__,
        "target": {
            "name": target.name,
            "kind": str(target.kind),
            "description": target.description,
            "runtimes": [str(r) for r in target.runtimes],
        },
    }
    data.update(
        {
            k: v
            for k, v in manifest.items()
            if k not in ("format", "format_version", "edgeq_version", "target", "files")
        }
    )
    data["files"] = [
        {"path": f, "bytes": (folder / f).stat().st_size, "sha256": sha256_file(folder / f)} for f in files
    ]
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    fileio.write_text(folder / MANIFEST, text, force=True)
    return (*files, MANIFEST)
