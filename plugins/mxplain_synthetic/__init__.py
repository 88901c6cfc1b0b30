"""mxplain_synthetic plugin package: registers nothing until its components are written."""
