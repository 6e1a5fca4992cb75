"""Parquet in and out, through pyarrow: columns keep their Arrow types.

Reading streams the file a record batch at a time (:data:`READ_BATCH_ROWS` rows), each
cell the Python value Arrow gives (int, float, bool, str, tz-aware datetime, date,
Decimal, list, dict; None for null), a float32 at its shortest decimal and a map with text
keys as a dict. :func:`batchrun.sheets.cells.arrow_cell_text` gives
the text a body is assembled from, as for every other format.

Writing appends one row group per call (a chunk of the job's rows) to a staged file that
is renamed onto the target at close. Input columns come back with the input's Arrow types
(from the :class:`~batchrun.sheets.handoff.HandOff`), or as strings when the input was
another format; result columns are typed: ``status``, ``attempts`` and ``usage_*`` int64,
``cost_usd`` float64, the rest strings.

pyarrow is imported here only, and only when a Parquet file is read or written.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrun.atomic import StagedFile
from batchrun.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ParquetResultWriter", "open_parquet", "result_type"]

READ_BATCH_ROWS = 10_000
# Result number columns that hold fractions (as batchrun.output.FLOAT_RESULTS).
FLOAT_RESULTS = ("cost_usd",)


def open_parquet(path: Path) -> tuple[list[str], pa.Schema, Iterator[list[Any]]]:
    """The file's column names, its Arrow schema and its rows of Python values.

    A file pyarrow cannot read is an :class:`InputError` naming it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        stream = pq.ParquetFile(path)
        schema = stream.schema_arrow
    except (pa.ArrowException, OSError) as error:
        raise InputError(path, f"is not a readable Parquet file ({error})") from None
    return list(schema.names), schema, _rows(path, stream)


def _rows(path: Path, stream: Any) -> Iterator[list[Any]]:
    import pyarrow as pa

    try:
        for batch in stream.iter_batches(batch_size=READ_BATCH_ROWS):
            columns = [_values(column) for column in batch.columns]
            yield from (list(row) for row in zip(*columns, strict=True))
    except pa.ArrowException as error:
        raise InputError(path, f"is not a readable Parquet file ({error})") from None
    finally:
        stream.close()


def _values(column: pa.Array) -> list[Any]:
    """A column's cells as Python values, as a person reads them: a float32 at the shortest
    decimal that is that float32 (``0.7``, not ``0.699999988079071``), a map with text keys
    as an object (``{"team": "ops"}``, not a list of pairs)."""
    import pyarrow as pa

    values: list[Any] = column.to_pylist()
    kind = column.type
    if pa.types.is_float32(kind) or pa.types.is_float16(kind):
        return [_short_float(value, kind.bit_width) for value in values]
    if pa.types.is_map(kind) and pa.types.is_string(kind.key_type):
        return [None if pairs is None else dict(pairs) for pairs in values]
    return values


def _short_float(value: float | None, bits: int) -> float | None:
    """The shortest decimal that reads back as the same ``bits``-wide float."""
    if value is None or not math.isfinite(value):
        return value
    code = "e" if bits == 16 else "f"
    exact = struct.pack(code, value)
    for digits in range(1, 18):
        short = float(f"{value:.{digits}g}")
        if struct.pack(code, short) == exact:
            return short
    return value


def result_type(name: str, number: bool) -> pa.DataType:
    """The Arrow type of a result column: numbers int64 (``cost_usd`` float64), else text."""
    import pyarrow as pa

    if not number:
        return pa.string()
    return pa.float64() if name.endswith(FLOAT_RESULTS) else pa.int64()


class ParquetResultWriter:
    """Writes cells column by column to a Parquet file, one row group per call."""

    cut_cells = 0  # nothing is cut: only .xlsx has a cell limit

    def __init__(
        self,
        path: Path,
        columns: list[str],
        numbers: list[bool],
        typed: list[bool],
        schema: pa.Schema | None,
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        known = {} if schema is None else {field.name: field for field in schema}
        fields = []
        for name, number, is_typed in zip(columns, numbers, typed, strict=True):
            if is_typed and name in known:
                fields.append(known[name])
            else:
                fields.append(pa.field(name, result_type(name, number)))
        self._schema = pa.schema(fields)
        # Typed cells of an input with no Arrow type (another format) are written as text.
        self._as_text = [
            is_typed and name not in known for name, is_typed in zip(columns, typed, strict=True)
        ]
        self._staged = StagedFile(path)
        try:
            self._writer = pq.ParquetWriter(self._staged.temp, self._schema)
        except BaseException:
            self._staged.discard()
            raise

    def write_columns(self, cells: list[list[Any]]) -> None:
        import pyarrow as pa

        from batchrun.sheets.cells import text_cells

        arrays = [
            pa.array(text_cells(values) if as_text else values, type=field.type)
            for values, field, as_text in zip(cells, self._schema, self._as_text, strict=True)
        ]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))

    def close(self, summary: object | None) -> None:
        try:
            self._writer.close()
        except BaseException:
            self._staged.discard()
            raise
        self._staged.commit()

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self._staged.discard()
