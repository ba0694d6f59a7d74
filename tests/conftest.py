"""The suites' fixtures live in leifur_dev.pytest_plugin so that child pytest runs (cleanup tests) use them too."""

import os

pytest_plugins = ["leifur_dev.pytest_plugin"]

collect_ignore = []
# The after-suite check runs in its own pytest invocation, once everything else has torn down.
if not os.environ.get("LEIFUR_AFTER_SUITE"):
    collect_ignore.append("after_suite")
# Benchmarks measure; they are run on purpose: LEIFUR_BENCHMARKS=1 pytest tests/benchmarks -s
if not os.environ.get("LEIFUR_BENCHMARKS"):
    collect_ignore.append("benchmarks")
