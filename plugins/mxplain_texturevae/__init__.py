"""mxplain_texturevae plugin package: registers nothing until its components are written."""
