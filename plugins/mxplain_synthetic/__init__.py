"""mxplain_synthetic: synthetic SEM-like crystal-powder lots with known ground truth, and an
independent image-analysis module that measures the four attributes from the pixels alone, and
the generator itself as an editor (``synthetic_oracle``)."""

from mxplain import hookimpl


@hookimpl
def mxplain_datasets():
    from mxplain_synthetic.dataset import SyntheticLots

    return [SyntheticLots]


@hookimpl
def mxplain_editors():
    from mxplain_synthetic.oracle import SyntheticOracleEditor

    return [SyntheticOracleEditor]
