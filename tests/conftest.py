import os
import sys

# two pytest-xdist workers share two cores: one BLAS thread each avoids
# oversubscription (set before numpy loads in the workers)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

# tests import the oracles as `tests.oracles`; make the repo root importable
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
