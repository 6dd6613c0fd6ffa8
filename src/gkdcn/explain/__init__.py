"""Interpretability: Grad-CAM, deformable sampling and per-element attribution."""
