"""Where a model runs: this machine, a board over SSH, an emulated Raspberry Pi, a phone over adb.

``open_device(spec, **options)`` picks the implementation from the spec:

========================  ===========================================================================
``local``                 this machine (subprocesses, a temporary folder)
``ssh://user@host[:port]`` a Linux board over SSH (key authentication, known_hosts checked)
``qemu-aarch64[:cpu]``    an emulated Raspberry Pi (Debian arm64 userland under QEMU user mode)
``adb[:serial]``          an Android phone over adb
========================  ===========================================================================

Every device implements :class:`Device`: ``push``, ``run``, ``pull``, ``remove``, ``close`` and a fresh
``workdir``; use it as a context manager.
"""

from __future__ import annotations

import importlib

from edgeq.devices.base import Device, RunResult
from edgeq.errors import ConfigError, DeviceError

# spec prefix → module with ``from_spec(spec, **options) -> Device``. Explicit, so the list is the truth.
REGISTRY: dict[str, str] = {
    "local": "edgeq.devices.local",
    "ssh": "edgeq.devices.ssh",
    "qemu-aarch64": "edgeq.devices.qemu_aarch64",
    "adb": "edgeq.devices.adb",
}
SPELLINGS = (
    "local",
    "ssh://user@host[:port]",
    "qemu-aarch64[:cortex-a53|cortex-a72|cortex-a76]",
    "adb[:serial]",
)


def device_kind(spec: str) -> str:
    """The registry key for ``spec`` (``ssh://pi@raspberrypi`` → ``ssh``), or a ConfigError."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"device {spec!r}: expected one of {', '.join(SPELLINGS)}")
    if spec.startswith("ssh://"):
        return "ssh"
    kind = spec.split(":", 1)[0]
    if kind not in REGISTRY:
        import difflib

        near = difflib.get_close_matches(kind, list(REGISTRY), n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise ConfigError(f"unknown device '{spec}'; {hint}known devices: {', '.join(SPELLINGS)}")
    if kind == "local" and spec != "local":
        raise ConfigError(f"unknown device '{spec}'; the host itself is spelled 'local'")
    return kind


def open_device(spec: str, **options) -> Device:
    """Open the device ``spec`` names (see the module docstring); ``options`` go to its ``from_spec``.

    SSH options: ``key_filename``, ``known_hosts``, ``trust_new_host``, ``python`` (the remote Python
    command, default ``python3``), ``connect_timeout``. qemu-aarch64: ``userland``, ``progress``.
    """
    kind = device_kind(spec)
    try:
        module = importlib.import_module(REGISTRY[kind])
    except ImportError as e:
        raise DeviceError(
            f"device '{spec}': support for {kind} devices is not available here ({e})"
        ) from None
    factory = getattr(module, "from_spec", None)
    if factory is None:
        raise DeviceError(
            f"device '{spec}': {module.__name__} has no from_spec(spec, **options); "
            "this edgeq installation is incomplete"
        )
    try:
        return factory(spec, **options)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise ConfigError(f"device '{spec}': {str(e).split('() ', 1)[-1]}") from None
        raise


__all__ = ["REGISTRY", "Device", "RunResult", "device_kind", "open_device"]
