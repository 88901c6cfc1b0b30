"""mxplain_wideresnet: the WideResNet peak-stress regressor of seed 000 (supplement B)."""

from mxplain import hookimpl


@hookimpl
def mxplain_predictors():
    from .predictor import WideResNetPredictor

    return [WideResNetPredictor]
