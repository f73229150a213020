"""An emulated Raspberry Pi: Debian's arm64 userland run by qemu-aarch64 user mode on this machine.

Files stay on the host file system (QEMU user mode shares it); only the Python interpreter and the libraries
it loads are aarch64. Outputs are the ones a Pi's CPU computes (int8 results match a real Cortex-A core's);
timings are the emulator's and say nothing about a real board.
"""

from __future__ import annotations

import os

from edgeq.devices.local import LocalDevice
from edgeq.devices.userland import UNSET_ENV, Userland, UserlandSpec, check_cpu, emulated_env, ensure_userland

DEFAULT_CPU = "cortex-a72"  # Raspberry Pi 4


class QemuAarch64Device(LocalDevice):
    """``qemu-aarch64[:cpu]``. The userland is built into the cache on first use (about a minute)."""

    emulated = True

    def __init__(
        self,
        *,
        cpu: str = DEFAULT_CPU,
        userland: Userland | None = None,
        spec: UserlandSpec | None = None,
        progress: bool | None = None,
        tmp_root: str | os.PathLike[str] | None = None,
    ):
        check_cpu(cpu)
        self.cpu = cpu
        self.userland = userland or ensure_userland(spec, progress=progress)
        super().__init__(
            python=self.userland.argv(),
            name=f"qemu-aarch64:{cpu}",
            env=emulated_env(cpu),
            unset_env=UNSET_ENV,
            tmp_root=tmp_root,
        )


def from_spec(
    spec: str,
    *,
    userland: Userland | None = None,
    progress: bool | None = None,
    trust_new_host: bool = False,
    tmp_root: str | os.PathLike[str] | None = None,
) -> QemuAarch64Device:
    """``qemu-aarch64`` (Cortex-A72, a Pi 4) or ``qemu-aarch64:cortex-a76`` (a Pi 5), ``:cortex-a53`` (Pi 3).

    ``trust_new_host`` is accepted for a uniform CLI and has no meaning here.
    """
    del trust_new_host
    _, _, cpu = spec.partition(":")
    return QemuAarch64Device(cpu=cpu or DEFAULT_CPU, userland=userland, progress=progress, tmp_root=tmp_root)
