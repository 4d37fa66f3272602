import os
import warnings

# Under pytest -n N (pytest-xdist) each worker gets a core of its own, and its threads follow: workers sharing
# cores with spinning OpenMP threads would slow each other down far more than they gain.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and hasattr(os, "sched_setaffinity"):
    _cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {_cores[int(_worker[2:]) % len(_cores)]})
    os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "2")
warnings.filterwarnings("ignore", message="No ccache found")

import paddle  # noqa: E402
import pytest  # noqa: E402

paddle.set_device("cpu")


@pytest.fixture(autouse=True)
def _seed():
    paddle.seed(0)
