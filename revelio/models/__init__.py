"""Diffusion backbones: diffusers pipelines wrapped with hook points, noising and generation."""

from revelio.models.backbone import Backbone
from revelio.models.dit import DiTBackbone
from revelio.models.flux import FluxBackbone
from revelio.models.loading import load_backbone
from revelio.models.pixart import PixArtBackbone
from revelio.models.pixel_unet import PixelUNetBackbone
from revelio.models.sd3 import SD3Backbone
from revelio.models.stable_diffusion import StableDiffusionBackbone

__all__ = ["Backbone", "DiTBackbone", "FluxBackbone", "PixArtBackbone", "PixelUNetBackbone", "SD3Backbone",
           "StableDiffusionBackbone", "load_backbone"]
