"""Whole SCoTD pipeline as a Ray job: tasks -> teacher sampling -> corpus -> students -> evaluation -> report.

Submit to a running cluster (the driver runs on the head node and only orchestrates; the head's RAY_ADDRESS is
picked up, so no cluster is started here)::

    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --runtime-env jobs/runtime_env.yaml \\
        -- python jobs/distill.py configs/tiny.yaml output.dir=/tmp/scotd-runs/tiny

Run one stage on existing artifacts with ``--stages teacher`` (comma-separated). Without a cluster, the same command
run directly (``python jobs/distill.py CONFIG``) starts a local Ray cluster for the job's lifetime.
"""

import sys

from scotd.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
