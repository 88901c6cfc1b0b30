"""The VGG16/19 trunk: :mod:`mxplain.vgg` (shared code lives in the core), under its old name."""

from mxplain.vgg import (
    CFGS,
    GREY_MEAN,
    GREY_STD,
    HUB_FILES,
    LAYER_NAMES,
    VGG,
    hub_path,
    load_vgg,
)

__all__ = ["CFGS", "GREY_MEAN", "GREY_STD", "HUB_FILES", "LAYER_NAMES", "VGG", "hub_path",
           "load_vgg"]
