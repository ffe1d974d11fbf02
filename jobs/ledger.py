"""The row ledger: one ``ops.ledger`` row per stage per run, and the balance every stage must keep
(rows in = rows out + dropped + quarantined) before it writes anything."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.lakehouse import Lakehouse


class LedgerImbalance(RuntimeError):
    """A stage's rows in != rows out + dropped + quarantined."""


@dataclass
class StageReport:
    """One ledger row: what one stage did to its rows in one run."""

    run_id: str
    stage: str
    rows_in: int
    rows_out: int
    dropped: dict[str, int]
    rows_quarantined: int
    bytes_in: int
    bytes_out: int
    seconds: float
    config_hash: str
    input_versions: dict[str, int] = field(default_factory=dict)
    output_versions: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
    output_rows: int | None = None  # rows written to the output table (= rows_out unless 1:N)
    # output rows per source before and after a stage's mixture (build_sft: gold.sft by source)
    source_rows_in: dict[str, int] | None = None
    source_rows_out: dict[str, int] | None = None

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped.values())

    def check_balance(self) -> None:
        """Fail loudly unless rows in = rows out + rows dropped + rows quarantined."""
        accounted = self.rows_out + self.rows_dropped + self.rows_quarantined
        if self.rows_in != accounted:
            raise LedgerImbalance(
                f"stage {self.stage}: {self.rows_in} rows in but {accounted} accounted for "
                f"({self.rows_out} out + {self.rows_dropped} dropped {self.dropped} + "
                f"{self.rows_quarantined} quarantined)"
            )

    def as_row(self) -> dict:
        row = asdict(self)
        row["rows_dropped"] = self.rows_dropped
        return row


LEDGER_FIELDS: tuple[tuple[str, str], ...] = (
    ("run_id", "string"),
    ("stage", "string"),
    ("rows_in", "long"),
    ("rows_out", "long"),
    ("rows_dropped", "long"),
    ("dropped", "map<string,long>"),
    ("rows_quarantined", "long"),
    ("bytes_in", "long"),
    ("bytes_out", "long"),
    ("seconds", "double"),
    ("config_hash", "string"),
    ("input_versions", "map<string,long>"),
    ("output_versions", "map<string,long>"),
    ("dry_run", "boolean"),
    ("output_rows", "long"),
    ("source_rows_in", "map<string,long>"),
    ("source_rows_out", "map<string,long>"),
)


def append_ledger(lake: Lakehouse, reports: list[StageReport], position: int = 0) -> int:
    """Append one ops.ledger row per report and return the ledger's new version. The append is
    idempotent: Delta's ``txnAppId`` is the run id and ``txnVersion`` the ``position`` of the
    (first) stage in the run, so a retried append of the same stage adds no row twice."""
    from jobs.arrow import local_frame

    rows = [{name: r.as_row()[name] for name, _ in LEDGER_FIELDS} for r in reports]
    frame = local_frame(lake.spark, rows, ", ".join(f"{n} {kind}" for n, kind in LEDGER_FIELDS))
    runs = {r.run_id for r in reports}
    txn = (f"codemill-ledger-{runs.pop()}", position) if len(runs) == 1 else None
    return lake.write("ops.ledger", frame, append=True, txn=txn)
