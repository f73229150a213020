"""``package``: the files one device needs, in one folder, chosen by the target profile's kind."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from edgeq import fileio
from edgeq.config import DeviceKind, Preprocess, Target, load_target
from edgeq.errors import ModelError


def package(
    model: str | os.PathLike[str],
    *,
    target: Target | str,
    output: str | os.PathLike[str],
    float_model: str | os.PathLike[str] | None = None,
    labels: Sequence[str] | None = None,
    preprocess: Preprocess | None = None,
    force: bool = False,
):
    """Package the int8 QDQ ``model`` for ``target`` into the folder ``output``; returns a Package.

    ``labels`` (class names) and ``preprocess`` (how raw inputs become model inputs) go into the package's
    metadata where the format has a place for them. The folder is built under a temporary name and renamed
    into place when complete.
    """
    from edgeq.packaging.base import Package, write_manifest

    target = load_target(target)
    model = Path(model)
    if not model.is_file():
        raise ModelError(f"{model}: int8 model not found; run `edgeq quantize` first")
    if float_model is not None and not Path(float_model).is_file():
        raise ModelError(f"{float_model}: float model not found")
    with fileio.output_dir(output, force=force) as tmp:
        if target.kind is DeviceKind.MCU:
            from edgeq.packaging.mcu import package_mcu

            manifest = package_mcu(model, target=target, output_dir=tmp, float_model=float_model)
        elif target.kind is DeviceKind.PHONE:
            from edgeq.packaging.android import package_android

            manifest = package_android(
                model,
                target=target,
                output_dir=tmp,
                float_model=float_model,
                labels=labels,
                preprocess=preprocess,
            )
        else:
            from edgeq.packaging.sbc import package_sbc

            manifest = package_sbc(model, target=target, output_dir=tmp, float_model=float_model)
        files = write_manifest(tmp, target=target, manifest=manifest)
    return Package(path=Path(output), target=target.name, files=files, manifest=manifest)
