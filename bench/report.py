"""Writing ``latest.json`` and ``latest.md``."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from .common import Row

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str:
    """HEAD's commit, with ``+dirty`` when the work tree has changes (read-only git calls)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def pass_mark(value: bool | None) -> str:
    return {True: "pass", False: "**MISS**", None: "–"}[value]


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"Commit `{doc['commit']}` · {doc['machine']} · {doc['mode']} run, {doc['duration_s']:.0f} s "
        f"({doc['started']}) · load average at start/end {doc['load_avg']['start'][0]:.2f}/"
        f"{doc['load_avg']['end'][0]:.2f}",
        "",
        "| row | figure | unit | target | pass |",
        "|---|---:|---|---|---|",
    ]
    notes = []
    for row in doc["rows"]:
        name = row["name"]
        if row.get("note"):
            notes.append(f"{len(notes) + 1}. `{name}`: {row['note']}")
            name = f"{name} [{len(notes)}]"
        lines.append(f"| {name} | {fmt(row['figure'])} | {row['unit']} | {row['target'] or '–'} | "
                     f"{pass_mark(row['pass'])} |")
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def write(out_dir: Path, rows: list[Row], **meta: Any) -> tuple[Path, Path, dict[str, Any]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"commit": commit(), **meta, "rows": [r.as_dict() for r in rows]}
    json_path, md_path = out_dir / "latest.json", out_dir / "latest.md"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    md_path.write_text(markdown(doc))
    return json_path, md_path, doc


README_START = "<!-- bench:latest-table:start -->"
README_END = "<!-- bench:latest-table:end -->"


def update_readme(readme: Path, table_markdown: str) -> bool:
    """Put the table between the README's markers (full runs only). False when the markers
    are missing (the README is left alone)."""
    try:
        text = readme.read_text()
    except OSError:
        return False
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    readme.write_text(text[: start + len(README_START)] + "\n" + table_markdown.rstrip() + "\n" + text[end:])
    return True
