"""The JSON schema of every event contract, in one file, so a contract change shows in review.

    python -m common.contracts.snapshot --write   # after an intended change
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from common.contracts.registry import all_types

SNAPSHOT = Path(__file__).resolve().parents[3] / "contracts_snapshot.json"


def current() -> dict:
    # Only the platform's own contract modules (tests register scratch contracts at run time).
    return {
        t: model.model_json_schema(by_alias=True)
        for t, model in all_types().items()
        if model.__module__.startswith("common.contracts.")
    }


def render() -> str:
    return json.dumps(current(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    if "--write" in sys.argv:
        SNAPSHOT.write_text(render())
        print(f"wrote {SNAPSHOT}")
    else:
        sys.stdout.write(render())
