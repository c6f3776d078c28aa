"""Sparse autoencoders: one module for every format featurepath reads, slices and training."""

from featurepath.sae.formats import detect_format, load_sae, save_sae
from featurepath.sae.model import SAE, SAESlice

__all__ = ["SAE", "SAESlice", "detect_format", "load_sae", "save_sae"]
