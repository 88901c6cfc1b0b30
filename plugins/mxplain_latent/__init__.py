"""mxplain_latent: gradient-based design in a generative model's latent space vs. pixel space and
the interpretability score of seed 001 (Cang et al., §4)."""

from mxplain import hookimpl


@hookimpl
def mxplain_explainers():
    from mxplain_latent.design import LatentDesign

    return [LatentDesign]
