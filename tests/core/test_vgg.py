"""mxplain.vgg, the core's VGG trunk (mxplain_vgg and mxplain_texturevae use it): layer layout,
torchvision-format weight loading, grey folding, hub cache."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from mxplain import vgg as vggmod
from mxplain.errors import UserError
from mxplain.vgg import CFGS, GREY_MEAN, GREY_STD, LAYER_NAMES, VGG, load_vgg

TV_INDICES = {  # torchvision's conv indices in vgg16/vgg19 .features
    "vgg16": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
    "vgg19": [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34],
}


def torchvision_state(arch: str, seed: int = 3) -> dict:
    """A state dict with torchvision's key names and shapes, classifier included."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    cin = 3
    convs = [v for v in CFGS[arch] if v != "M"]
    for idx, cout in zip(TV_INDICES[arch], convs):
        sd[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.05
        sd[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.01
        cin = cout
    for i, (o, n) in {0: (4096, 25088), 3: (4096, 4096), 6: (1000, 4096)}.items():
        # right shape, one element of storage (a stride-0 view) to keep the file tiny
        sd[f"classifier.{i}.weight"] = torch.zeros(1, 1).expand(o, n)
        sd[f"classifier.{i}.bias"] = torch.zeros(o)
    return sd


@pytest.mark.parametrize("arch,n_layers", [("vgg16", 31), ("vgg19", 37)])
@pytest.mark.parametrize("size", [32, 64])
def test_layer_names_and_shapes(arch, n_layers, size):
    net = VGG(arch)
    names = LAYER_NAMES[arch]
    assert len(net.features) == n_layers == len(names)
    assert list(names)[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert list(names)[-1] == "pool5" and names["pool5"] == n_layers - 1
    for n, i in names.items():
        kind = {"conv": torch.nn.Conv2d, "relu": torch.nn.ReLU, "pool": torch.nn.MaxPool2d}
        assert isinstance(net.features[i], kind[n[:4]])
    assert [i for i, m in enumerate(net.features) if isinstance(m, torch.nn.Conv2d)] == \
        TV_INDICES[arch]
    last = "relu5_4" if arch == "vgg19" else "relu5_3"
    out = net(torch.rand(2, 1, size, size), ["relu1_2", "relu2_2", "relu3_3", last, "pool5"])
    assert out["relu1_2"].shape == (2, 64, size, size)
    assert out["relu2_2"].shape == (2, 128, size // 2, size // 2)
    assert out["relu3_3"].shape == (2, 256, size // 4, size // 4)
    assert out[last].shape == (2, 512, size // 16, size // 16)
    assert out["pool5"].shape == (2, 512, size // 32, size // 32)


def test_forward_stops_at_deepest_requested_layer(monkeypatch):
    net = VGG("vgg16")
    called = []
    for i, m in enumerate(net.features):
        m.register_forward_hook(lambda *_a, i=i: called.append(i))
    net(torch.rand(1, 1, 32, 32), ["relu2_1"])
    # features.0 is applied functionally (folded); everything after runs as a module
    assert max(called) == LAYER_NAMES["vgg16"]["relu2_1"] == 6
    with pytest.raises(UserError, match="conv9_9"):
        net(torch.rand(1, 1, 32, 32), ["conv9_9"])


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_weights_file_loads_into_right_layers(tmp_path, arch):
    sd = torchvision_state(arch)
    path = tmp_path / f"{arch}.pth"
    torch.save(sd, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random-init warning when a file is given
        net = load_vgg(arch, weights=str(path))
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    for idx in TV_INDICES[arch]:
        assert torch.equal(net.features[idx].weight, sd[f"features.{idx}.weight"])
        assert torch.equal(net.features[idx].bias, sd[f"features.{idx}.bias"])


def test_grey_folding_equals_rgb_net_on_replicated_input(tmp_path):
    sd = torchvision_state("vgg16")
    torch.save(sd, tmp_path / "w.pth")
    net = load_vgg("vgg16", weights=str(tmp_path / "w.pth"))
    x = torch.rand(3, 1, 32, 32)
    got = net(x, ["relu1_1", "relu3_3"])
    # reference: the plain RGB network (unfolded first conv) on a 3x replicated, normalised input
    h = ((x - GREY_MEAN) / GREY_STD).repeat(1, 3, 1, 1)
    ref = {}
    for i, m in enumerate(net.features):
        h = m(h)
        if i == 1:
            ref["relu1_1"] = h
        if i == LAYER_NAMES["vgg16"]["relu3_3"]:
            ref["relu3_3"] = h
            break
    assert torch.allclose(got["relu1_1"], ref["relu1_1"], atol=1e-5)
    assert torch.allclose(got["relu3_3"], ref["relu3_3"], atol=1e-4, rtol=1e-4)
    # and the fold really is a sum over the RGB weights
    w = sd["features.0.weight"]
    direct = F.relu(F.conv2d((x - GREY_MEAN) / GREY_STD, w.sum(1, keepdim=True),
                             sd["features.0.bias"], padding=1))
    assert torch.allclose(got["relu1_1"], direct, atol=1e-5)


def test_bad_weight_files_are_user_errors(tmp_path):
    sd = torchvision_state("vgg16")
    torch.save(sd, tmp_path / "w16.pth")
    with pytest.raises(UserError, match="vgg19"):
        load_vgg("vgg19", weights=str(tmp_path / "w16.pth"))
    bad = dict(sd)
    bad["features.5.weight"] = torch.zeros(128, 32, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(UserError, match=r"features\.5\.weight"):
        load_vgg("vgg16", weights=str(tmp_path / "bad.pth"))
    with pytest.raises(UserError, match="does not exist"):
        load_vgg("vgg16", weights=str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        load_vgg("vgg16", weights=str(tmp_path / "junk.pth"))
    with pytest.raises(UserError, match="vgg11"):
        load_vgg("vgg11")


def test_hub_cache_lookup(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert vggmod.hub_path("vgg16") == tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    sd = torchvision_state("vgg16", seed=11)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(sd, tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = load_vgg("vgg16")
    assert torch.equal(net.features[28].weight, sd["features.28.weight"])
    assert net.source.endswith("vgg16-397923af.pth")
    # vgg19 is not cached there: random filters, with a warning
    with pytest.warns(UserWarning, match="random-filter"):
        load_vgg("vgg19")


def test_hub_cache_via_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    (tmp_path / "th" / "hub" / "checkpoints").mkdir(parents=True)
    sd = torchvision_state("vgg16", seed=5)
    torch.save(sd, tmp_path / "th" / "hub" / "checkpoints" / "vgg16-397923af.pth")
    net = load_vgg("vgg16")
    assert torch.equal(net.features[0].weight, sd["features.0.weight"])


def test_random_init_warns_and_is_seeded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty"))
    with pytest.warns(UserWarning, match="random-filter VGG features"):
        a = load_vgg("vgg16", seed=1)
    with pytest.warns(UserWarning):
        b = load_vgg("vgg16", seed=1)
        c = load_vgg("vgg16", seed=2)
    assert torch.equal(a.features[10].weight, b.features[10].weight)
    assert not torch.equal(a.features[10].weight, c.features[10].weight)
    w = a.features[28].weight  # Kaiming normal, fan-out: std sqrt(2 / (512 * 9))
    assert abs(float(w.std()) - (2 / (512 * 9)) ** 0.5) < 0.05 * (2 / (512 * 9)) ** 0.5
    assert float(a.features[28].bias.abs().sum()) == 0.0
    assert a.source == "random:1"


def test_channels_of_each_layer():
    net = VGG("vgg19")
    assert [net.channels(n) for n in ("conv1_1", "relu1_2", "pool1", "relu3_4", "pool5")] == \
        [64, 64, 64, 256, 512]
    with pytest.raises(UserError, match="VGG layer 'relu5_9' is unknown for vgg19"):
        net.channels("relu5_9")
