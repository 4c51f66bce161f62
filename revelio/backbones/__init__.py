"""Diffusion backbones: diffusers pipelines wrapped with hook points, noising and generation."""

from revelio.backbones.base import Backbone
from revelio.backbones.dit import DiTBackbone
from revelio.backbones.loading import load_backbone
from revelio.backbones.pixel_unet import PixelUNetBackbone
from revelio.backbones.stable_diffusion import StableDiffusionBackbone

__all__ = ["Backbone", "DiTBackbone", "PixelUNetBackbone", "StableDiffusionBackbone", "load_backbone"]
