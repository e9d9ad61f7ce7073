"""The networks: Conv4's head fits its features in both variants and at every image size."""
import pytest
import torch
import torch.nn.functional as F

from metakit import MAML, MetakitError
from metakit.nets import MLP, BatchedAdam, Conv4


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


def test_batched_adam_steps_each_network_as_its_own_adam_only_while_active():
    """Three networks' weights stacked [3, ...]: under random active masks, each network's
    weights and moments follow a torch.optim.Adam that steps that network alone, only when
    it is active (its own step count in the bias correction); inactive rows stay bit for bit."""
    g = torch.Generator().manual_seed(0)
    stacked = torch.nn.Parameter(torch.randn(3, 4, 2, generator=g, dtype=torch.float64))
    batched = BatchedAdam([stacked], lr=0.1)
    alone = [torch.nn.Parameter(stacked[t].detach().clone()) for t in range(3)]
    adams = [torch.optim.Adam([w], lr=0.1) for w in alone]
    targets = torch.randn(3, 4, 2, generator=g, dtype=torch.float64)
    for _ in range(12):
        active = torch.rand(3, generator=g) < 0.6
        before = stacked.detach().clone()
        stacked.grad = None
        (stacked - targets).pow(3).sum().backward()
        batched.step(active)
        assert torch.equal(stacked[~active], before[~active])
        for t in range(3):
            if active[t]:
                adams[t].zero_grad()
                (alone[t] - targets[t]).pow(3).sum().backward()
                adams[t].step()
    for t in range(3):
        torch.testing.assert_close(stacked[t], alone[t], rtol=1e-12, atol=1e-12)
        own = adams[t].state[alone[t]]
        torch.testing.assert_close(batched.state[stacked]["exp_avg_sq"][t], own["exp_avg_sq"])
        assert batched.state[stacked]["step"][t].item() == (own["step"].item() if own else 0)
    with pytest.raises(MetakitError, match="lr > 0"):
        BatchedAdam([stacked], lr=0.0)
