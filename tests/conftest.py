import os
import sys

import torch

# Tests import the tiny-model helpers from this folder.
sys.path.insert(0, os.path.dirname(__file__))
# Deterministic and offline.
torch.manual_seed(0)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
