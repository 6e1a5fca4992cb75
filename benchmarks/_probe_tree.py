"""``_probe.py`` on another batchrun tree: ``BATCHRUN_TREE`` (a ``git archive`` of a commit).

    BATCHRUN_TREE=/tmp/main python benchmarks/_probe_tree.py REPORT.json -- run IN.csv ...

The tree goes first on ``sys.path``, and an editable install's import hook (which would
find this checkout's batchrun before any path) is taken out, so the job runs that tree's
code with this environment's libraries. For old-against-new rounds (``run_overhead.py
--against``).
"""

import os
import runpy
import sys
from pathlib import Path

sys.meta_path[:] = [finder for finder in sys.meta_path if "editable" not in repr(finder)]
sys.path.insert(0, os.environ["BATCHRUN_TREE"])
probe = str(Path(__file__).with_name("_probe.py"))
sys.argv = [probe, *sys.argv[1:]]
runpy.run_path(probe, run_name="__main__")
