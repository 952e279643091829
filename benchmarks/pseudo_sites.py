"""Split a PhysioNet 2019 MEDS conversion into two pseudo-sites by ICU unit (MICU vs SICU).

For external validation without a second hospital (``densefeat benchmark --data OUT/MICU
--external OUT/SICU``). Subjects keep their splits and labels; the ``ICU_UNIT//*`` codes that
define the sites are dropped, so the unit is not a feature. Stays without a unit code are left
out.

Usage::

    densefeat convert physionet2019 training_setA.tar.xz --out /tmp/pA
    python benchmarks/pseudo_sites.py /tmp/pA /tmp/sites
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from densefeat.data.meds import read_meds_dataset, write_meds_dataset


def main(src: Path, out: Path) -> None:
    ds = read_meds_dataset(src)
    events = ds.events().collect()
    for unit in ("MICU", "SICU"):
        ids = events.filter(pl.col("code") == f"ICU_UNIT//{unit}")["subject_id"].unique()
        keep = pl.col("subject_id").is_in(ids.implode())
        site = events.filter(keep & ~pl.col("code").str.starts_with("ICU_UNIT//"))
        path = write_meds_dataset(
            out / unit,
            site,
            dataset_name=f"physionet2019_{unit}",
            etl_name="densefeat.physionet2019",
            splits=ds.splits.filter(keep),
            overwrite=True,
        )
        (path / "labels").mkdir(exist_ok=True)
        for f in sorted((src / "labels").glob("*.parquet")):
            pl.read_parquet(f).filter(keep).write_parquet(path / "labels" / f.name)
        print(f"{unit}: {ids.len()} stays, {site.height} events -> {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
