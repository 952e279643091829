"""The benchmark: every method under one budget on the same encoder and pairs, evaluated on
the same rows, with the primary endpoints declared before running.

* :mod:`~densefeat.benchmark.config`: what runs (methods, ablations, seeds, budget, settings);
* :mod:`~densefeat.benchmark.run`: the one orchestrator (:func:`run_benchmark`);
* :mod:`~densefeat.benchmark.sources`: what is modality-specific (EHR histories, notes);
* :mod:`~densefeat.benchmark.runs`, :mod:`~densefeat.benchmark.cache`: reuse of finished runs
  and evaluations;
* :mod:`~densefeat.benchmark.rows`: tasks and evaluation rows;
* :mod:`~densefeat.benchmark.evaluate`: probes and robustness records of frozen embeddings;
* :mod:`~densefeat.benchmark.geometry`: geometry records beside the isotropic reference;
* :mod:`~densefeat.benchmark.summary`: the comparison table and the primary endpoints.
"""
