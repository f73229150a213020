"""Target profiles and calibration recipes: every shipped file loads; bad files fail with a clear message."""

from __future__ import annotations

import pytest

from edgeq.config import (
    ActivationType,
    CalibrationMethod,
    DeviceKind,
    list_recipes,
    list_targets,
    load_recipe,
    load_target,
)
from edgeq.errors import ConfigError

REQUIRED_TARGETS = {"cpu-x86", "android-arm64", "raspberry-pi-4", "raspberry-pi-5", "cortex-m4"}


def test_every_shipped_target_loads_and_core_ones_exist():
    targets = {t.name: t for t in list_targets()}
    assert set(targets) >= REQUIRED_TARGETS
    for path_name, t in targets.items():
        assert t.description and t.runtimes
        assert t.source.endswith(f"{path_name}.toml"), "a profile's name must match its file name"
    assert targets["cpu-x86"].quantization.activations is ActivationType.UINT8
    for name in REQUIRED_TARGETS - {"cpu-x86"}:
        assert targets[name].quantization.activations is ActivationType.INT8
    assert targets["cortex-m4"].kind is DeviceKind.MCU
    assert targets["cortex-m4"].hardware.flash_kb and targets["cortex-m4"].hardware.sram_kb


def test_every_shipped_recipe_loads():
    recipes = {r.name: r for r in list_recipes()}
    assert {"imagenet-224", "grayscale-28"} <= set(recipes)
    for r in recipes.values():
        assert r.source.endswith(f"{r.name}.toml")
    assert recipes["imagenet-224"].method.name is CalibrationMethod.PERCENTILE


def test_unknown_key_names_file_line_and_nearest_key(tmp_path):
    bad = tmp_path / "board.toml"
    bad.write_text(
        'name = "b"\ndescription = "d"\nkind = "mcu"\nruntimes = ["c"]\n'
        '[hardware]\ncpu = "m4"\narch = "armv7e-m"\nflash_kbb = 1024\n'
    )
    with pytest.raises(ConfigError) as e:
        load_target(bad)
    msg = str(e.value)
    assert str(bad) in msg and ":8" in msg and "hardware.flash_kbb" in msg and "flash_kb" in msg
    assert "\n" not in msg


def test_wrong_type_and_bad_enum_value(tmp_path):
    bad = tmp_path / "t.toml"
    bad.write_text(
        'name = "b"\ndescription = "d"\nkind = "toaster"\nruntimes = ["c"]\n'
        '[hardware]\ncpu = "m4"\narch = "a"\n'
    )
    with pytest.raises(ConfigError, match="kind.*toaster.*desktop, phone, sbc, mcu"):
        load_target(bad)
    bad.write_text(
        'name = "b"\ndescription = "d"\nkind = "mcu"\nruntimes = ["c"]\n'
        '[hardware]\ncpu = "m4"\narch = "a"\ncores = "two"\n'
    )
    with pytest.raises(ConfigError, match="hardware.cores.*integer"):
        load_target(bad)


def test_missing_required_key_and_invalid_toml(tmp_path):
    bad = tmp_path / "t.toml"
    bad.write_text('name = "b"\nkind = "mcu"\nruntimes = ["c"]\n[hardware]\ncpu = "m4"\narch = "a"\n')
    with pytest.raises(ConfigError, match="required key 'description'"):
        load_target(bad)
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_target(bad)


def test_unknown_name_suggests_nearest():
    with pytest.raises(ConfigError, match="did you mean 'raspberry-pi-4'"):
        load_target("raspbery-pi-4")
    with pytest.raises(ConfigError, match="known recipes"):
        load_recipe("no-such-recipe")


def test_recipe_value_constraints(tmp_path):
    bad = tmp_path / "r.toml"
    bad.write_text('name = "r"\n[method]\nname = "percentile"\npercentile = 20.0\n')
    with pytest.raises(ConfigError, match="percentile"):
        load_recipe(bad)
    bad.write_text('name = "r"\n[preprocess]\nmean = [0.5, 0.5]\nstd = [1.0]\n')
    with pytest.raises(ConfigError, match="same length"):
        load_recipe(bad)


def test_public_api_names_resolve():
    import edgeq

    for name in edgeq.__all__:
        assert getattr(edgeq, name) is not None, name


def test_every_subpackage_is_packaged():
    """pyproject.toml lists packages explicitly (targets/ and calibration/ are mapped in): none missing."""
    import sys
    from pathlib import Path

    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "edgeq").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"


def test_recipe_algorithms_table(tmp_path):
    from edgeq.config import WeightClipping

    r = tmp_path / "r.toml"
    r.write_text('name = "r"\n[algorithms]\nequalization = true\nweight_clipping = "mse"\n')
    recipe = load_recipe(r)
    assert recipe.algorithms.equalization and recipe.algorithms.weight_clipping is WeightClipping.MSE
    assert recipe.algorithms.any and not load_recipe(None).algorithms.any
    r.write_text('name = "r"\n[algorithms]\nbias_corection = true\n')
    with pytest.raises(ConfigError, match="did you mean 'bias_correction'"):
        load_recipe(r)


def test_stage_functions_are_not_shadowed_by_their_subpackages():
    """`edgeq.quantize` is a function and a subpackage: importing the subpackage must not rebind the name."""
    import subprocess
    import sys

    code = (
        "import edgeq.quantize.api, edgeq.export, edgeq.lower.reference, edgeq.validate.report\n"
        "from edgeq import export, calibrate, quantize, lower, validate, package\n"
        "import edgeq\n"
        "for f in (export, calibrate, quantize, lower, validate, package, edgeq.quantize, edgeq.quantize):\n"
        "    assert callable(f) and not isinstance(f, type(edgeq)), f\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
