"""mxplain_attribute: attribute explanations of seed 000 (§4.3, eq. 2, Figures 4-7).

* ``forward`` (:class:`ForwardSweep`): sensitivity sweeps of every attribute over [0, 1];
* ``backward`` (:class:`BackwardCounterfactual`): sparse counterfactual attributes that move the
  prediction to a target (proximal gradient, or SPSA for non-differentiable models).
"""

from mxplain import hookimpl


@hookimpl
def mxplain_explainers():
    from .backward import BackwardCounterfactual
    from .forward import ForwardSweep

    return [ForwardSweep, BackwardCounterfactual]
