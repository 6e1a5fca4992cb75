"""The endpoint-agnostic sending core: rows go out exactly once, in order per thread.

- :mod:`~batchrun.sending.states` — a row's states: one enum, one transition table, asked
  by every module below.
- :mod:`~batchrun.sending.client` — HTTP to one endpoint: headers, timeouts, the key masked.
- :mod:`~batchrun.sending.urls` — a base URL that cannot leak the key; URLs shown masked.
- :mod:`~batchrun.sending.retry` — retry decisions as pure functions.
- :mod:`~batchrun.sending.limiter` — the requests-per-minute limiter.
- :mod:`~batchrun.sending.journal` — the crash-safe journal of row states.
- :mod:`~batchrun.sending.durability` — what is in the journal before a request leaves:
  marked a block ahead, or marked as sent.
- :mod:`~batchrun.sending.sender` — one row's create, retries and reconciliation.
- :mod:`~batchrun.sending.plan` — what a job does with each row, from the journal.
- :mod:`~batchrun.sending.runner` — lanes per thread, workers, stopping.
- :mod:`~batchrun.sending.tally` — a job's rows counted into its summary, chunk by chunk.
- :mod:`~batchrun.sending.session` — the HTTP session, limiters and signals around a job.
"""
