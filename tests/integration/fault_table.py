"""The fault table of docs/resilience.md, from what the fault tests measured.

Every fault test (`test_faults.py`, `test_flapping.py`, `test_drain.py`, `test_redis_faults.py`,
`test_store_faults.py`, `test_network.py`) saves one row per fault into `artifacts/faults.json` as it
runs, keeping the rows of earlier runs. Print the table with

    .venv/bin/python -m tests.integration.fault_table

Columns: the worst time from the end of a caller's utterance (or the start of a call, or the moment a
handed-over call's stream closed) to the next reply audio the caller heard; how many calls did not
carry out their whole script (dropped); how many caller utterances are missing from the stored
transcripts, and how many were answered or stored twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "artifacts" / "faults.json"


@dataclass
class FaultRow:
    fault: str
    worst_ms: float | None  # worst time to the next reply heard
    calls: int  # calls placed in the scenario
    dropped: int  # calls that did not carry out their whole script
    lost: int  # caller utterances missing from the stored transcripts
    twice: int  # caller utterances answered (or stored) more than once
    detail: str = ""


def save(key: str, row: FaultRow) -> None:
    """Into artifacts/faults.json, beside the rows of other tests and earlier runs."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        saved = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        saved = {}
    saved[key] = {**asdict(row), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    RESULTS.write_text(json.dumps(saved, indent=2) + "\n")


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value / 1000:.2f} s"


def table(saved: dict) -> str:
    lines = ["| fault | worst time to the next reply heard | calls dropped | utterances lost | answered twice |",
             "|---|---|---|---|---|"]
    for row in saved.values():
        if "calls" in row:  # a FaultRow
            lines.append(f"| {row['fault']} | {_ms(row['worst_ms'])} | {row['dropped']} of {row['calls']} | "
                         f"{row['lost']} | {row['twice']} |")
        else:  # test_faults.Row: one faulty and one healthy call, transcripts checked
            calls = 1 if row.get("healthy_unaffected") is None else 2
            dropped = row.get("dropped", 0)
            lost = row.get("lost", 0 if row.get("transcripts_complete") else "?")
            lines.append(f"| {row['fault']} | {_ms(row['worst_ms'])} | {dropped} of {calls} | {lost} | "
                         f"{row.get('twice', 0)} |")
    return "\n".join(lines)


def main() -> None:
    try:
        saved = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        print(f"no results yet in {RESULTS}: run the fault tests first")
        return
    print(table(saved))


if __name__ == "__main__":
    main()
