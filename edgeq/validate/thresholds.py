"""Pass/fail limits for a validation, and their evaluation."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from edgeq.errors import ConfigError
from edgeq.validate.metrics import OutputMetrics


@dataclass(frozen=True)
class Thresholds:
    """Limits a validation must meet; ``None`` means not checked.

    ``max_top1_drop``: percentage points of top-1 accuracy int8 may lose against the labels; without labels,
    the points by which top-1 agreement with the float model may fall short of 100 %.
    ``min_agreement``: percent of samples where int8 must pick the float model's top-1 class.
    ``min_sqnr_db``: the lowest SQNR (dB) any model output may have.
    Top-1 limits apply to classifier-shaped outputs (rank 2, last dim > 1) and fail when there is none.
    Any NaN/Inf in an output always fails.
    """

    max_top1_drop: float | None = None
    min_agreement: float | None = None
    min_sqnr_db: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_top1_drop", "min_agreement", "min_sqnr_db"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(v)):
                raise ConfigError(f"Thresholds.{name}={v!r}: expected a number or None")
            if v is not None:
                object.__setattr__(self, name, float(v))  # 1 and 1.0 must give the same report JSON
        if self.max_top1_drop is not None and not 0 <= self.max_top1_drop <= 100:
            raise ConfigError(
                f"Thresholds.max_top1_drop={self.max_top1_drop:g}: expected percentage points "
                "in 0..100 (1.0 allows one point of top-1 accuracy lost)"
            )
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 100:
            raise ConfigError(
                f"Thresholds.min_agreement={self.min_agreement:g}: expected a percentage in 0..100 "
                "(99.0 means 99 %)"
            )

    @property
    def any(self) -> bool:
        """Whether any limit is set."""
        return not (self.max_top1_drop is None and self.min_agreement is None and self.min_sqnr_db is None)

    def failures(self, outputs: Sequence[OutputMetrics]) -> list[str]:
        """One line per limit that ``outputs`` miss, and per output with NaN/Inf values."""
        out: list[str] = []
        for o in outputs:
            for side, count in (("float", o.float_nonfinite), ("int8", o.quant_nonfinite)):
                if count:
                    out.append(
                        f"output '{o.name}': the {side} model produced {count} NaN/Inf values "
                        f"(first in sample {o.first_nonfinite_sample})"
                    )
        classifiers = [o for o in outputs if o.classifier]
        if (self.max_top1_drop is not None or self.min_agreement is not None) and not classifiers:
            out.append(
                "top-1 thresholds are set but no output is classifier-shaped (rank 2, last dim > 1); "
                "use min_sqnr_db for this model"
            )
        for o in classifiers:
            if self.max_top1_drop is not None:
                if o.top1_drop_pts is not None:
                    drop, what = (
                        o.top1_drop_pts,
                        (
                            f"top-1 accuracy fell from {o.float_accuracy_pct:.2f} % to "
                            f"{o.quant_accuracy_pct:.2f} %"
                        ),
                    )
                else:
                    drop, what = 100.0 - o.agreement_pct, f"top-1 agreement is {o.agreement_pct:.2f} %"
                # 1e-9: a drop equal to the limit passes although 100·k/n is not exact in binary
                if drop > self.max_top1_drop + 1e-9:
                    out.append(
                        f"output '{o.name}': {what}, a drop of {drop:.2f} points > max_top1_drop "
                        f"{self.max_top1_drop:g}"
                    )
            if self.min_agreement is not None and o.agreement_pct < self.min_agreement - 1e-9:
                out.append(
                    f"output '{o.name}': top-1 agreement {o.agreement_pct:.2f} % < min_agreement "
                    f"{self.min_agreement:g} %"
                )
        if self.min_sqnr_db is not None:
            for o in outputs:
                if not o.sqnr_db >= self.min_sqnr_db:  # written so that a NaN SQNR fails too
                    out.append(
                        f"output '{o.name}': SQNR {o.sqnr_db:.2f} dB < min_sqnr_db {self.min_sqnr_db:g} dB"
                    )
        return out
