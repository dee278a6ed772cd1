"""A job's thread share reaches every thread pool of its process: torch's OpenMP and numpy's OpenBLAS
(whose spinning threads beyond the share made scikit-learn's fits 13x slower on a loaded machine, in a
benchmark that set no limit). OpenBLAS also reads OMP_NUM_THREADS, so this guards the rule rather than
a bug the jobs had."""

import json
import os
import subprocess
import sys

from relviz.jobs import JobPriority

PROBE = ("import json, numpy, torch; from threadpoolctl import threadpool_info; "
         "print(json.dumps({i['internal_api']: i['num_threads'] for i in threadpool_info()}))")


def test_a_jobs_environment_limits_openmp_and_openblas_to_its_threads():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env.update(JobPriority(niceness=0, threads=1).env())
    pools = json.loads(subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                                      check=True, timeout=120).stdout)
    assert pools.get("openblas") == 1 and pools.get("openmp") == 1, pools
    assert JobPriority(niceness=0, threads=None).env() == {}  # no rule: the libraries' own defaults
