"""Rewrite the configuration table in README.md from the Settings class.

    python docs/config_reference.py        # rewrite
    python docs/config_reference.py --check  # exit 1 if README is stale
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from slatewise.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- config:start -->", "<!-- config:end -->"


def table() -> str:
    rows = ["| environment / flag | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = "~/.cache/slatewise" if field.default_factory is not None else field.default
        default = "(unset)" if default is None else ('""' if default == "" else default)
        rows.append(f"| `SLATEWISE_{name.upper()}` / `--{name.replace('_', '-')}` | `{default}` | {field.description} |")
    return "\n".join(rows)


def render(text: str) -> str:
    return re.sub(f"{re.escape(START)}.*?{re.escape(END)}", f"{START}\n{table()}\n{END}", text, flags=re.S)


if __name__ == "__main__":
    current = README.read_text()
    new = render(current)
    if "--check" in sys.argv:
        sys.exit(0 if new == current else 1)
    README.write_text(new)
