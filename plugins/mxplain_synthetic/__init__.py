"""mxplain_synthetic: synthetic SEM-like crystal-powder lots with known ground truth, and an
independent image-analysis module that measures the four attributes from the pixels alone."""

from mxplain import hookimpl


@hookimpl
def mxplain_datasets():
    from mxplain_synthetic.dataset import SyntheticLots

    return [SyntheticLots]
