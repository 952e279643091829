"""Converters to MEDS: OMOP CDM (:mod:`~densefeat.data.convert.omop`), FHIR bulk exports
(:mod:`~densefeat.data.convert.fhir`), PhysioNet/CinC 2019 ICU stays
(:mod:`~densefeat.data.convert.physionet2019`) and the built-in default dataset, Eunomia GiBleed
(:mod:`~densefeat.data.convert.eunomia`)."""
