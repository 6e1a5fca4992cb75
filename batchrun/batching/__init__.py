"""The Batch API (``run --batch``): rows as batch files, joined back by ``custom_id``.

- :mod:`~batchrun.batching.lines` — rows as batch lines, split into files (pure).
- :mod:`~batchrun.batching.ledger` — the job's parts in the journal, each step recorded.
- :mod:`~batchrun.batching.api` — uploads, batches, listing, downloads over HTTP.
- :mod:`~batchrun.batching.join` — output and error lines back to rows (pure).
- :mod:`~batchrun.batching.job` — the steps of one run, exactly once.
- :mod:`~batchrun.batching.run` — a run's HTTP session, signals and summary.

:func:`batchrun.batching.run.run_batch_rows` is what :mod:`batchrun.jobs` calls instead
of :func:`~batchrun.sending.session.run_rows` when ``settings.batch``;
:class:`batchrun.batching.jsonl.BatchJsonl` writes ``validate --batch-jsonl`` files.
"""
