"""3D student models."""

from relviz.models.minkunet import ARCHITECTURES, MinkUNet, MinkUNetConfig, build_minkunet, count_parameters

__all__ = ["ARCHITECTURES", "MinkUNet", "MinkUNetConfig", "build_minkunet", "count_parameters"]
