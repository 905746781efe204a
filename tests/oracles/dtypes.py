"""IR dtype name -> torch dtype, for oracles."""
import torch


def torch_dtype(name):
    return getattr(torch, name)
