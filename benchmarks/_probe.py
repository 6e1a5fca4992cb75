"""Run the batchrun CLI as its console script does, and note when each phase ended.

    python benchmarks/_probe.py REPORT.json [--stamps] -- run IN.csv -o OUT.csv ...

Writes REPORT.json: ``phases`` (seconds from this script's first line) and, with
``--stamps``, ``stamps``: the monotonic time of every create request sent. Only function
references are wrapped; nothing in batchrun changes. The CLI runs from ``sys.argv`` as
the console script does; the report is saved once the output is written, and again as the
CLI exits. Kept apart from
``_common.py`` and light on imports so that the timings hardly include the probe itself.
"""

import json
import sys
import time
from typing import Any

T0 = time.perf_counter()


def probe(report: str, stamps: bool, cli_args: list[str]) -> None:
    """Phases: ``imported`` (click, batchrun.cli and the sending stack), ``prepared``
    (the journal open, the sending session starts; rows stream in, are prepared, sent and
    written a chunk at a time from then on), ``send`` (the summary's ``seconds``), ``sent``
    (the last chunk written), ``written`` (output committed; the CLI then exits at once),
    and ``total``, the same as ``written``."""
    phases: dict[str, float] = {}
    times: list[float] = []

    from batchrun import cli, jobs
    from batchrun.sending import session

    phases["imported"] = time.perf_counter() - T0
    run_chunks, finish = session.run_chunks, jobs.StreamedOutput.finish

    def timed_run_chunks(*args: Any, **kwargs: Any) -> Any:
        phases["prepared"] = time.perf_counter() - T0
        summary = run_chunks(*args, **kwargs)
        phases["send"] = summary.seconds
        phases["sent"] = time.perf_counter() - T0
        return summary

    def timed_finish(*args: Any, **kwargs: Any) -> Any:
        result = finish(*args, **kwargs)
        phases["written"] = phases["total"] = time.perf_counter() - T0
        save()
        return result

    def save() -> None:
        with open(report, "w", encoding="utf-8") as stream:
            json.dump({"phases": phases, "stamps": times}, stream)

    session.run_chunks = timed_run_chunks  # type: ignore[assignment]
    jobs.StreamedOutput.finish = timed_finish  # type: ignore[method-assign]
    if stamps:
        from batchrun.sending import client

        call = client.ApiClient.call

        async def stamped_call(self: Any, method: str, path: str, payload: Any = None) -> Any:
            if method == "POST":
                times.append(time.monotonic())
            return await call(self, method, path, payload)

        client.ApiClient.call = stamped_call  # type: ignore[method-assign]
    sys.argv = ["batchrun", *cli_args]
    # The CLI ends with SystemExit; a job that stops before its output is written leaves
    # no "written" phase for the harness to find.
    try:
        cli.main()
    finally:
        save()


if __name__ == "__main__":
    argv = sys.argv[1:]
    split = argv.index("--")
    probe(argv[0], "--stamps" in argv[1:split], argv[split + 1 :])
