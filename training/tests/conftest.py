"""Puts training/ on sys.path so `import avtrain` works from `cd training && python3 -m pytest`."""

import os
import sys

TRAINING_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TRAINING_DIR not in sys.path:
    sys.path.insert(0, TRAINING_DIR)

GOLDEN_DIR = os.path.join(os.path.dirname(TRAINING_DIR), "test", "fixtures", "golden")
