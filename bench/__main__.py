"""``python -m bench [--quick] [--only NAME]``: run the row families, write the results.

Exit status: 0 when every family ran (missed targets are reported in the table, not by the
exit status; ``--strict`` makes a missed target exit 1 too), 1 when a family could not run.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the families chdir into proxy_conf/; keep `bench` importable
    sys.path.insert(0, str(ROOT))

FAMILIES = ("fast_path", "hop", "store", "throughput", "pacing", "soak")
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about a minute: fewer rounds, no 1M-link store")
    parser.add_argument("--only", metavar="NAME", action="append", choices=FAMILIES,
                        help=f"run only this family (repeatable): {', '.join(FAMILIES)}")
    parser.add_argument("--postgres-url", default=os.environ.get("SATOSA_ORCID_BENCH_POSTGRES_URL")
                        or os.environ.get("SATOSA_ORCID_TEST_POSTGRES_URL") or DEFAULT_POSTGRES,
                        help="PostgreSQL for the store and pacing families; a private schema is created "
                             "and dropped (default: $SATOSA_ORCID_BENCH_POSTGRES_URL, "
                             f"$SATOSA_ORCID_TEST_POSTGRES_URL or {DEFAULT_POSTGRES})")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results",
                        help="directory of latest.json and latest.md (default bench/results)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*CFB has been moved.*")

    from . import fast_path, hop_cost, pacing, report, soak, store_scale, throughput
    from .common import Deployment, Row, machine_description, progress

    selected = args.only or list(FAMILIES)
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    mode = "quick" if args.quick else "full"
    load_start = [round(x, 2) for x in os.getloadavg()]
    progress(f"{mode} run of {', '.join(selected)} on {machine_description()}")
    rows: list[Row] = []
    crashed = False
    with tempfile.TemporaryDirectory(prefix="satosa-orcid-bench-") as tmp:
        tmp_path = Path(tmp)
        deployment = None
        try:
            if {"fast_path", "hop", "throughput"} & set(selected):
                progress("setting up the demo deployment (keys, metadata, link store)")
                deployment = Deployment(tmp_path).__enter__()
            for family in FAMILIES:
                if family not in selected:
                    continue
                progress(f"phase {family}: start")
                phase_t0 = time.monotonic()
                try:
                    if family == "fast_path":
                        got = fast_path.run(deployment, quick=args.quick)
                    elif family == "hop":
                        got = hop_cost.run(deployment, quick=args.quick)
                    elif family == "store":
                        got = store_scale.run(tmp_path, args.postgres_url, quick=args.quick)
                    elif family == "throughput":
                        got = throughput.run(deployment, quick=args.quick)
                    elif family == "soak":
                        got = soak.run(tmp_path, args.postgres_url, quick=args.quick)
                    else:
                        got = pacing.run(tmp_path, args.postgres_url, quick=args.quick)
                except Exception as exc:  # report it and go on with the other families
                    crashed = True
                    traceback.print_exc()
                    got = [Row(f"{family}.error", None, "", None, False,
                               f"the phase failed: {type(exc).__name__}: {str(exc)[:300]}")]
                rows += got
                progress(f"phase {family}: done in {time.monotonic() - phase_t0:.0f} s")
        finally:
            if deployment is not None:
                deployment.__exit__(None, None, None)

    if not any(r.name.startswith("soak.") for r in rows):
        # The soak (two instances, faults: 5xx, orphan tokens, RSS growth) was left out (--only):
        # this row says so instead of leaving it missing from the table.
        rows.append(Row("soak", None, "", "5xx == 0, orphan tokens == 0, RSS growth ~ 0", None,
                        "the soak did not run this time: python -m bench --only soak (--quick: 45 logins)"))
    duration = time.monotonic() - t0
    json_path, md_path, doc = report.write(
        args.out, rows, machine=machine_description(), mode=mode, only=args.only,
        started=started.isoformat(timespec="seconds"), duration_s=round(duration, 1),
        load_avg={"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
    )
    from . import chart

    svg_path = chart.write(args.out / "latest.svg", doc["rows"],
                           subtitle=f"{mode} run of commit {doc['commit'][:12]} on {doc['machine']}, "
                                    f"{doc['started']}")
    progress(f"wrote {json_path}, {md_path} and {svg_path} ({duration:.0f} s)")
    if not args.quick and not args.only and args.out.resolve() == (ROOT / "bench" / "results").resolve():
        if report.update_readme(ROOT / "bench" / "README.md", report.markdown(doc)):
            progress("updated the table in bench/README.md")
    print(report.markdown(doc))
    missed = [r for r in rows if r.pass_ is False]
    if crashed:
        return 1
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
