"""mxplain_latent plugin package: registers nothing until its components are written."""
