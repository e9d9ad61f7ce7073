"""The networks: Conv4's head fits its features in both variants and at every image size."""
import pytest
import torch
import torch.nn.functional as F

from metakit import MAML
from metakit.nets import MLP, Conv4


@pytest.mark.parametrize("strided", [True, False])
@pytest.mark.parametrize("size", [28, 84])
def test_conv4_head_fits_the_features_of_both_variants(strided, size):
    net = Conv4(1, 5, hidden=8, image_size=size, strided=strided)
    # by hand: stride-2 convolutions round up (28 -> 14 -> 7 -> 4 -> 2; 84 -> 42 -> 21 -> 11 -> 6),
    # 2x2 max pooling rounds down (28 -> 14 -> 7 -> 3 -> 1; 84 -> 42 -> 21 -> 10 -> 5)
    side = {(True, 28): 2, (True, 84): 6, (False, 28): 1, (False, 84): 5}[strided, size]
    assert net.head.in_features == 8 * side * side
    assert net(torch.rand(3, 1, size, size)).shape == (3, 5)
    # and MAML adapts it (a gradient config with model.strided: false crashed here)
    maml = MAML(net, F.cross_entropy, inner_lr=0.1)
    x, y = torch.rand(2, 5, 1, size, size), torch.arange(5).repeat(2, 1)
    assert maml.adapt(x, y)["head.weight"].shape == (2, 5, 8 * side * side)


def test_mlp_rejects_bad_sizes():
    with pytest.raises(ValueError, match="MLP sizes must be integers >= 1"):
        MLP(1, [0], 1)
