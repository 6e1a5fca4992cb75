"""batchrun: a spreadsheet of OpenAI Assistants "Create Run" requests, sent safely.

Library entry points for notebooks and KNIME's Python Script node (pandas in, pandas out,
never printing, never exiting)::

    import batchrun
    out = batchrun.validate_frame(df, api_version="v2")
    out = batchrun.run_frame(df, base_url="http://localhost:8000/v1")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "run_frame", "run_frame_async", "validate_frame"]

if TYPE_CHECKING:
    from batchrun.library import run_frame, run_frame_async, validate_frame


def __dir__() -> list[str]:
    # The lazy entry points are listed as the module's own (dir(batchrun), completion).
    return sorted({*globals(), *__all__})


def __getattr__(name: str) -> Any:
    # Lazy: `batchrun --help` must not pay for pandas and aiohttp.
    if name in __all__[1:]:
        from batchrun import library

        return getattr(library, name)
    raise AttributeError(f"module 'batchrun' has no attribute {name!r}")
