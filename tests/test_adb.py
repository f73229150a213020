"""The adb device's error paths, against Debian's real adb binary (no phone exists here: nothing is faked).

Each test runs its own adb server on a free port with its keys in tmp_path, and stops that server afterwards.
"""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from edgeq.devices.adb import AdbDevice, parse_connect, parse_devices
from edgeq.errors import DeviceError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def adb_server(tmp_path, monkeypatch):
    adb = shutil.which("adb")
    if adb is None:
        pytest.skip("adb is not installed (Debian: apt-get install adb); its error paths cannot be checked")
    # adb keeps its key pair under ANDROID_SDK_HOME / ANDROID_USER_HOME / HOME: keep this run's in tmp_path.
    for var in ("HOME", "ANDROID_SDK_HOME", "ANDROID_USER_HOME"):
        monkeypatch.setenv(var, str(tmp_path))
    port = _free_port()
    yield port
    subprocess.run([adb, "-P", str(port), "kill-server"], capture_output=True, timeout=30, check=False)


def test_missing_adb_binary_is_a_clear_error(tmp_path):
    with pytest.raises(DeviceError, match=r"adb: '.*nope/adb' not found; install Android platform-tools"):
        AdbDevice(adb=str(tmp_path / "nope" / "adb"))


def test_no_device_attached(adb_server):
    with pytest.raises(DeviceError, match=r"no Android device attached .*USB debugging"):
        AdbDevice(server_port=adb_server)


def test_unknown_serial(adb_server):
    with pytest.raises(DeviceError, match=r"device 'R58M0000000' is not attached \(attached: none\)"):
        AdbDevice("R58M0000000", server_port=adb_server)


def test_connect_to_nothing_is_refused_although_adb_exits_0(adb_server):
    nobody = _free_port()  # bound and released: nothing listens there
    adb = shutil.which("adb")
    proc = subprocess.run(
        [adb, "-P", str(adb_server), "connect", f"127.0.0.1:{nobody}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, "adb's behaviour changed: `adb connect` to nothing now fails by exit status"
    with pytest.raises(DeviceError, match=rf"adb connect 127\.0\.0\.1:{nobody}: failed to connect .*refused"):
        AdbDevice(connect=f"127.0.0.1:{nobody}", server_port=adb_server)


def test_parse_devices_states_and_details():
    text = (
        "* daemon not running; starting now at tcp:5037\n"
        "* daemon started successfully\n"
        "List of devices attached\n"
        "emulator-5554          device product:sdk_gphone64_arm64 model:sdk_gphone64_arm64 device:emu64a "
        "transport_id:1\n"
        "R58M123ABC             unauthorized usb:1-1 transport_id:2\n"
        "0123456789ABCDEF       no permissions (user in plugdev group; are your udev rules wrong?); see "
        "[http://developer.android.com/tools/device.html] usb:1-2 transport_id:3\n"
        "192.168.1.7:5555       offline transport_id:4\n"
        "\n"
    )
    devices = parse_devices(text)
    assert [(d.serial, d.state) for d in devices] == [
        ("emulator-5554", "device"),
        ("R58M123ABC", "unauthorized"),
        ("0123456789ABCDEF", "no permissions"),
        ("192.168.1.7:5555", "offline"),
    ]
    assert devices[0].ready and not any(d.ready for d in devices[1:])
    assert devices[0].detail("model") == "sdk_gphone64_arm64"
    assert devices[2].detail("usb") == "1-2"
    assert parse_devices("List of devices attached\n\n") == []


@pytest.mark.parametrize(
    "reply",
    [
        "failed to connect to '127.0.0.1:1': Connection refused",
        "cannot connect to 10.0.0.2:5555: No route to host (113)",
        "unable to connect to 10.0.0.2:5555",
        "",
    ],
)
def test_parse_connect_failures(reply):
    with pytest.raises(DeviceError, match="wireless debugging"):
        parse_connect(reply, "10.0.0.2:5555")


@pytest.mark.parametrize("reply", ["connected to 10.0.0.2:5555", "already connected to 10.0.0.2:5555"])
def test_parse_connect_success(reply):
    parse_connect(reply, "10.0.0.2:5555")


def test_open_device_spec_reaches_adb(adb_server):
    from edgeq.devices import open_device

    with pytest.raises(DeviceError, match=r"device '192\.168\.1\.7:5555' is not attached"):
        open_device("adb:192.168.1.7:5555", server_port=adb_server)
    with pytest.raises(DeviceError, match="no Android device attached"):
        open_device("adb", server_port=adb_server)
