from .backbones import BACKBONES, Backbone, build_backbone
from .classifier import Classifier

__all__ = ["BACKBONES", "Backbone", "build_backbone", "Classifier"]
