import os
import sys

# tests import the oracles as `tests.oracles`; make the repo root importable
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
