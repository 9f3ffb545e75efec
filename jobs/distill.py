"""Whole SCoTD pipeline as a Ray job: tasks -> teacher sampling -> corpus -> students -> evaluation -> report.

Submit to a running cluster (the driver runs on the head node and only orchestrates; the head's RAY_ADDRESS is
picked up, so no cluster is started here). The tiny preset on a local Ray head (started from the
activated venv, ``ray start --head``, so that the entrypoint's ``python`` is the venv's), from the repo root::

    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --runtime-env jobs/runtime_env.yaml \\
        -- python jobs/distill.py configs/tiny.yaml output.dir=$PWD/runs/tiny \\
        tasks.0.train=$PWD/../shared/data/commonsenseqa/train_rand_split.jsonl \\
        tasks.0.eval=$PWD/../shared/data/commonsenseqa/dev_rand_split.jsonl

The driver runs in an uploaded copy of the working dir (runtime_env.yaml), where a path relative to the checkout,
such as the config's ../shared/data, does not exist: give the data and output.dir as absolute paths (on a
multi-node cluster, on storage every node mounts) or as URIs (s3://, gs://), as README.md's cluster section does.

Run one stage on existing artifacts with ``--stages teacher`` (comma-separated). Without a cluster, the same command
run directly (``python jobs/distill.py CONFIG``) starts a local Ray cluster for the job's lifetime.
"""

import sys

from scotd.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
