"""Sparse autoencoders: one module for every format featurepath reads, slices and training.

Two registries extend it without editing it: :func:`register_activation` (an SAE architecture's
encoder, shared by the full SAE and its slices) and :func:`register_sae_format` (a directory
layout and its loader)."""

from featurepath.sae.activations import register_activation
from featurepath.sae.formats import detect_format, load_sae, register_sae_format, save_sae
from featurepath.sae.model import SAE, SAESlice

__all__ = ["SAE", "SAESlice", "detect_format", "load_sae", "save_sae", "register_activation",
           "register_sae_format"]
