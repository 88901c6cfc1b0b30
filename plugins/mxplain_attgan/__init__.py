"""mxplain_attgan: the AttGAN attribute editor (seed 000, §4.2 and supplement C), name ``attgan``.

See :mod:`mxplain_attgan.model` for the networks and the attribute encoding and
:mod:`mxplain_attgan.editor` for training.
"""

from mxplain import hookimpl


@hookimpl
def mxplain_editors():
    from .editor import AttGANEditor

    return [AttGANEditor]
