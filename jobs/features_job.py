"""Deprecated alias of :mod:`jobs.stream_job` (the Flink job's one name), kept so that scripts
running ``flink run -py jobs/features_job.py`` or ``python -m jobs.features_job`` still work."""

import sys

from jobs.stream_job import main

if __name__ == "__main__":
    sys.exit(main())
