"""What one row is, per endpoint: its request, the ids that order rows, its result columns.

- :mod:`~batchrun.endpoints.runs` — the seed's Create Run (``POST /threads/{id}/runs``).
"""
