"""The Batch API (``run --batch``): rows as batch files, joined back by ``custom_id``.

- :mod:`~batchrun.batch.lines` — rows as batch lines, split into files (pure).
- :mod:`~batchrun.batch.ledger` — the job's parts in the journal, each step recorded.
- :mod:`~batchrun.batch.parts` — a run's parts on disk: the sheet into part files, and
  where each row is.
- :mod:`~batchrun.batch.api` — uploads, batches, listing, downloads over HTTP.
- :mod:`~batchrun.batch.join` — output and error lines back to rows (pure).
- :mod:`~batchrun.batch.job` — the steps of one run, exactly once.
- :mod:`~batchrun.batch.outcomes` — the rows written out beside the journal's results.
- :mod:`~batchrun.batch.run` — a run's HTTP session, signals and summary.

:func:`batchrun.batch.run.run_batch_rows` is what :mod:`batchrun.jobs` calls instead
of :func:`~batchrun.sending.session.run_chunks` when ``settings.batch``;
:class:`batchrun.batch.jsonl.BatchJsonl` writes ``validate --batch-jsonl`` files.
"""
