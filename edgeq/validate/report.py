"""The validation report: what was compared, where it ran, the numbers, and whether they pass."""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgeq import fileio
from edgeq.errors import DataError
from edgeq.validate.metrics import LayerMetrics, OutputMetrics
from edgeq.validate.serialize import decode, encode, sig
from edgeq.validate.thresholds import Thresholds

FORMAT = "edgeq-validation-report"
_NUMBER_LIST = re.compile(r"\[(?:\s*-?[0-9][0-9.eE+-]*\s*,)*\s*-?[0-9][0-9.eE+-]*\s*\]")
VERSION = 1


@dataclass(frozen=True)
class Latency:
    """Wall time of single inferences (batch 1) after warm-up: median and 90th percentile."""

    median_ms: float = field(metadata=sig(4))
    p90_ms: float = field(metadata=sig(4))
    runs: int
    threads: int = 1


@dataclass(frozen=True)
class ModelStats:
    """One model's size and, when measured, its latency and peak resident memory where it ran."""

    path: str | None = None
    size_bytes: int | None = None
    latency: Latency | None = None
    peak_rss_bytes: int | None = None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Environment:
    """Where both models ran: ``device`` is ``host`` or a device spec (``ssh://pi@…``, ``qemu-aarch64:…``).

    ``emulated`` marks an emulator, whose timings say nothing about the real device.
    """

    device: str = "host"
    runtime: str = ""
    machine: str = ""
    cpu: str = ""
    emulated: bool = False

    @classmethod
    def host(cls) -> Environment:
        """This machine, running onnxruntime."""
        import onnxruntime as ort

        return cls(
            device="host",
            runtime=f"onnxruntime {ort.__version__}",
            machine=platform.machine(),
            cpu=_cpu_name(),
        )


@dataclass(frozen=True)
class Report:
    """The result of validating an int8 model against its float original.

    Only ``outputs`` is required, so that on-device validation can build a Report from :func:`compare`'s
    metrics plus what the device measured (``float_model``/``quant_model`` latency and peak RSS,
    ``environment``). ``layers`` are ranked worst SQNR first. ``passed`` and ``failures`` evaluate
    ``thresholds``; :meth:`to_json` is identical between reruns except for the timing fields (latency, RSS).
    """

    outputs: tuple[OutputMetrics, ...]
    layers: tuple[LayerMetrics, ...] = ()
    float_model: ModelStats = ModelStats()
    quant_model: ModelStats = ModelStats()
    environment: Environment = Environment()
    thresholds: Thresholds = field(default_factory=Thresholds)
    notes: tuple[str, ...] = ()

    @property
    def samples(self) -> int:
        return self.outputs[0].samples if self.outputs else 0

    @property
    def failures(self) -> list[str]:
        """One line per threshold missed (and per output with NaN/Inf values)."""
        return self.thresholds.failures(self.outputs)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def speedup(self) -> float | None:
        """Float median latency ÷ int8 median latency (> 1: int8 is faster)."""
        f, q = self.float_model.latency, self.quant_model.latency
        return f.median_ms / q.median_ms if f and q and q.median_ms > 0 else None

    @property
    def size_ratio(self) -> float | None:
        """Float size ÷ int8 size (> 1: int8 is smaller)."""
        f, q = self.float_model.size_bytes, self.quant_model.size_bytes
        return f / q if f and q else None

    def to_dict(self) -> dict[str, object]:
        """JSON-able dict with a stable key order; derived values (passed, failures, percentages) included."""
        body = encode(self)
        return {
            "format": FORMAT,
            "version": VERSION,
            "passed": self.passed,
            "failures": self.failures,
            "samples": self.samples,
            **body,
        }

    def to_json(self) -> str:
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)
        # One line per list of numbers (shapes, histogram counts) rather than one line per number.
        return (
            _NUMBER_LIST.sub(
                lambda m: "[" + ", ".join(m.group(0)[1:-1].split()).replace(",,", ",") + "]", text
            )
            + "\n"
        )

    @classmethod
    def from_dict(cls, data: object, *, source: str = "report") -> Report:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f'{source}: not an edgeq validation report (no "format": "{FORMAT}")')
        if data.get("version") != VERSION:
            raise DataError(
                f"{source}: report version {data.get('version')!r} is not {VERSION}; "
                "re-run the validation with this edgeq"
            )
        try:
            return decode(cls, data, "report")
        except ValueError as e:
            raise DataError(f"{source}: {e}; the report file is damaged: re-run the validation") from None

    @classmethod
    def from_json(cls, text: str, *, source: str = "report") -> Report:
        """The Report that :meth:`to_json` wrote (floats as rounded there)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{source}: not valid JSON ({e.msg} at line {e.lineno}); "
                "the report file is damaged: re-run the validation"
            ) from None
        return cls.from_dict(data, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Report:
        """Read a report.json (or a folder holding one) written by :meth:`write`."""
        path = Path(path)
        if path.is_dir():
            path = path / "report.json"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read the report ({type(e).__name__})") from None
        return cls.from_json(text, source=str(path))

    def text(self, *, color: bool | None = None) -> str:
        """A compact table for the terminal; ``color`` (default: stdout is a TTY and rich is installed)."""
        from edgeq.validate.text import render_text

        return render_text(self, color=color)

    def html(self) -> str:
        """A self-contained HTML page: inline CSS, plots as embedded PNG, nothing fetched from a network."""
        from edgeq.validate.html import render_html

        return render_html(self)

    def write(self, folder: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write ``folder``/report.json and report.html; the folder appears complete or not at all."""
        fileio.check_output(folder, force=force)  # before the plots are drawn, which takes a second
        json_text, html_text = self.to_json(), self.html()
        with fileio.output_dir(folder, force=force) as tmp:
            fileio.write_text(tmp / "report.json", json_text)
            fileio.write_text(tmp / "report.html", html_text)
        return Path(folder)
