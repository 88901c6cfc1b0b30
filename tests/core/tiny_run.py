"""Config text of the tiny runs the core pipeline tests share: 4 synthetic lots of 32 px tiles, a
WideResNet-10-1 and a 3-layer AttGAN trained for one epoch."""

DATA = """
[data]
name = "synthetic"
n_lots = 4
tiles_per_lot = 6
tile_size = 32
seed = 3
"""
MODELS = """
[predictor]
name = "wideresnet"
depth = 10
widen = 1
epochs = 1
batch_size = 8
[editor]
name = "attgan"
enc_dim = 8
dec_dim = 8
dis_dim = 8
dis_fc_dim = 16
n_layers = 3
epochs = 1
batch_size = 8
"""
