"""The test suite. In the engine mode (EMBED_TEST_ENGINE=1, tests/engine_mode.py) the request
side and the engine keep their metrics in prometheus-client's multiprocess files, as the
processes of the multi-process mode do; that must be chosen before prometheus_client is
imported, so here, before any test module."""

import os
import tempfile

if os.environ.get("EMBED_TEST_ENGINE", "") == "1" and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="embed-test-metrics-")
