"""Split one MEDS dataset into two pseudo-sites, for external validation without a second
hospital (``densefeat benchmark --data OUT/<site 1> --external OUT/<site 2>``).

The split is by a documented, **non-random** subject attribute that changes the case mix, so
the second site is a real distribution shift, not a resample of the first:

* ``--by icu_unit`` (PhysioNet 2019): MICU vs SICU stays. The ``ICU_UNIT//*`` codes that define
  the sites are dropped (the unit is not a feature); stays without a unit code are left out.
* ``--by birth_year`` (any MEDS data with ``MEDS_BIRTH``; the default dataset, Eunomia
  GiBleed): subjects born up to the median birth year (``older``) vs after it (``younger``).
  Age drives the onset rates of the built-in tasks, so the case mix moves (the script prints
  each task's positives per site). ``MEDS_BIRTH`` stays (age is a feature of every method);
  the split is on it, so site B's ages lie outside site A's range: a deliberate shift.
* ``--by gender``: the ``GENDER/...`` (or ``GENDER//...``) static codes; those codes are
  dropped.

Subjects keep their splits. Labels: the dataset's own ``labels/*.parquet`` if it ships them,
else its built-in tasks built **once on the whole dataset** (the same task definitions and
prediction times on both sites), filtered per site into ``<site>/labels/``.

Usage::

    densefeat convert physionet2019 training_setA.tar.xz --out /tmp/pA
    python benchmarks/pseudo_sites.py /tmp/pA /tmp/sites                   # MICU / SICU
    densefeat convert eunomia                                              # the default data
    python benchmarks/pseudo_sites.py ~/.cache/densefeat/eunomia-meds-0.1.1-etl2 \\
        /tmp/esites --by birth_year                                        # older / younger
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import polars as pl

from densefeat.data.meds import read_meds_dataset, write_meds_dataset


def site_subjects(events: pl.DataFrame, by: str) -> dict[str, tuple[pl.Series, pl.Expr]]:
    """``site name -> (subject ids, events to drop)`` for the attribute ``by``."""
    if by == "icu_unit":
        drop = pl.col("code").str.starts_with("ICU_UNIT//")
        return {
            unit: (
                events.filter(pl.col("code") == f"ICU_UNIT//{unit}")["subject_id"].unique(),
                drop,
            )
            for unit in ("MICU", "SICU")
        }
    if by == "gender":
        drop = pl.col("code").str.contains(r"^GENDER/+")
        codes = sorted(events.filter(drop)["code"].unique().to_list())
        if len(codes) != 2:
            raise ValueError(f"--by gender needs two GENDER codes, found {codes}")
        return {
            c.split("/")[-1]: (events.filter(pl.col("code") == c)["subject_id"].unique(), drop)
            for c in codes
        }
    if by == "birth_year":
        births = (
            events.filter(pl.col("code") == "MEDS_BIRTH")
            .group_by("subject_id")
            .agg(pl.col("time").min().dt.year().alias("year"))
        )
        if births.height == 0:
            raise ValueError("--by birth_year: the data has no MEDS_BIRTH event")
        median = float(births["year"].median())  # type: ignore[arg-type]
        keep_all = pl.lit(False)
        older = births.filter(pl.col("year") <= median)["subject_id"]
        younger = births.filter(pl.col("year") > median)["subject_id"]
        print(f"birth year median {median:g}: older <= {median:g} < younger")
        return {"older": (older, keep_all), "younger": (younger, keep_all)}
    raise ValueError(f"--by must be icu_unit, gender or birth_year, got {by!r}")


def main(src: Path, out: Path, by: str = "icu_unit") -> None:
    ds = read_meds_dataset(src)
    events = ds.events().collect()
    label_files = sorted((src / "labels").glob("*.parquet"))
    if not label_files:
        # Built-in tasks on the whole dataset: one definition and one set of prediction times.
        from densefeat.data.tasks.labels import build_task_labels

        built = Path(tempfile.mkdtemp(prefix="pseudo_sites_labels_"))
        build_task_labels(ds, out_dir=built)
        label_files = sorted(built.glob("*.parquet"))
    for name, (ids, drop) in site_subjects(events, by).items():
        keep = pl.col("subject_id").is_in(ids.implode())
        site = events.filter(keep & ~drop)
        path = write_meds_dataset(
            out / name,
            site,
            dataset_name=f"{src.name}_{name}",
            # Kept: it tells the benchmark what the data is (PhysioNet: the ICU control).
            etl_name=ds.metadata.get("etl_name") or "densefeat.pseudo_sites",
            splits=ds.splits.filter(keep),
            overwrite=True,
        )
        (path / "labels").mkdir(exist_ok=True)
        counts = []
        for f in label_files:
            lab = pl.read_parquet(f).filter(keep)
            lab.write_parquet(path / "labels" / f.name)
            counts.append(f"{f.stem} {int(lab['boolean_value'].sum())}/{lab.height}")
        print(f"{name}: {ids.len()} subjects, {site.height} events -> {path}")
        print(f"  positives/rows: {', '.join(counts)}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="a MEDS dataset directory")
    p.add_argument("out", type=Path, help="where the two sites are written")
    p.add_argument("--by", default="icu_unit", choices=("icu_unit", "birth_year", "gender"))
    a = p.parse_args()
    main(a.src, a.out, a.by)
