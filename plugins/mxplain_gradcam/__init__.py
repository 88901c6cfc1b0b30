"""mxplain_gradcam: GradCAM / Integrated Gradients pixel baselines (explainer ``gradcam``) and the
side-by-side comparison of pixel and attribute explanations (explainer ``compare``)."""

from mxplain import hookimpl


@hookimpl
def mxplain_explainers():
    from mxplain_gradcam.compare import Compare
    from mxplain_gradcam.gradcam import GradCAM

    return [GradCAM, Compare]
