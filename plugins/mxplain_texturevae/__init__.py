"""mxplain_texturevae: the TextureVAE editor (seed 003) - a VGG19-encoder VAE trained with the
style loss, with named attributes through a linear probe on its latent codes."""

from mxplain import hookimpl


@hookimpl
def mxplain_editors():
    from mxplain_texturevae.editor import TextureVAEEditor

    return [TextureVAEEditor]
