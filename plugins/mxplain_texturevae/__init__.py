"""mxplain_texturevae: the TextureVAE editor (seed 003) - a VGG19-encoder VAE trained with the
style loss, with named attributes through a linear probe on its latent codes - and the seed's
structure-property model as the ``latent_krr`` predictor (latent or VGG19 features + ridge,
kernel ridge or SVR)."""

from mxplain import hookimpl


@hookimpl
def mxplain_editors():
    from mxplain_texturevae.editor import TextureVAEEditor

    return [TextureVAEEditor]


@hookimpl
def mxplain_predictors():
    from mxplain_texturevae.latent_regressor import LatentRegressor

    return [LatentRegressor]
