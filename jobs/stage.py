"""One stage of the pipeline as a Ray job, on the artifacts an earlier run left in ``output.dir``.

    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --runtime-env jobs/runtime_env.yaml \\
        -- python jobs/stage.py teacher configs/tiny.yaml output.dir=$PWD/runs/tiny

Stages: those of ``scotd run --help`` (comma-separate several: ``teacher,corpus``). The teacher
stage resumes: questions whose samples are already written are not sampled again. ``output.dir`` is the folder of
an earlier run (here the one of jobs/distill.py's example), absolute or a URI: the driver runs in an uploaded copy
of the working dir. The tasks stage also needs the data paths as absolute paths or URIs (see jobs/distill.py).
"""

import sys

from scotd.cli import main

if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    stage, config, *overrides = sys.argv[1:]
    sys.exit(main(["run", config, *overrides, "--stages", stage]))
