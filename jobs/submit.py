"""The spark-submit entry point of every stage and of the whole pipeline: the ``codemill`` CLI,
with the same commands and arguments.

    spark-submit --master spark://host:7077 --packages io.delta:delta-spark_2.13:4.0.1 \\
        jobs/submit.py stage dedup --env cluster --set lakehouse=s3a://bucket/codemill
    spark-submit ... jobs/submit.py run --env cluster --set lakehouse=s3a://bucket/codemill
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a file by spark-submit: the checkout's packages are importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
