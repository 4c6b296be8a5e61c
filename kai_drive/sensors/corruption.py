"""Sensor-corruption models: noise and dropout. Each takes the sensor-noise generator, so a seed
fixes them, and returns a new array (inputs are never modified in place)."""

from __future__ import annotations

import numpy as np


def image_noise(img: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise on a uint8 image; ``std`` in 0..255 units."""
    if std <= 0:
        return img
    noisy = img.astype(np.float32) + rng.normal(0.0, std, size=img.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def frame_dropout(img: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """With probability ``p`` the whole frame is lost (all zeros, a black image)."""
    if p > 0 and rng.random() < p:
        return np.zeros_like(img)
    return img


def range_noise(ranges: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise on normalised ranges, kept in [0, 1]."""
    if std <= 0:
        return ranges
    return np.clip(ranges + rng.normal(0.0, std, size=ranges.shape), 0.0, 1.0).astype(np.float32)


def beam_dropout(ranges: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Each beam independently returns nothing (1.0, "no hit within range") with probability ``p``."""
    if p <= 0:
        return ranges
    out = ranges.copy()
    out[rng.random(ranges.shape) < p] = 1.0
    return out


def vector_noise(x: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise on a float vector."""
    if std <= 0:
        return x
    return (x + rng.normal(0.0, std, size=x.shape)).astype(np.float32)
