"""mxplain_vgg: VGG texture features + random forests (Ling et al., seed 002).

Registers the ``texture_rf`` predictor. Modules: :mod:`.vgg` (the project's VGG16/19 trunk),
:mod:`.features` (mean/max/gram/VLAD texture featurizations), :mod:`.classify` (random-forest
classification grid and interpretability), :mod:`.predictor` (``TextureForestPredictor``),
:mod:`.grid` (``python -m mxplain_vgg.grid``).
"""

from mxplain import hookimpl


@hookimpl
def mxplain_predictors():
    from .predictor import TextureForestPredictor

    return [TextureForestPredictor]
