"""Steering: edit SAE features inside the denoiser (:func:`steer`), and choose which to edit."""

from revelio.steering.edits import FeatureEdit, SteeringWarning, steer

__all__ = ["FeatureEdit", "SteeringWarning", "steer"]
