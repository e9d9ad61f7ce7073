"""Prototypical and Matching Networks: their arithmetic by hand, and short runs on Omniglot."""
import math

import pytest
import torch
from torch import nn

import metakit
from metakit import MatchingNetwork, MetakitError, PrototypicalNetwork, TaskBatch


def test_logits_are_negative_squared_distances_to_class_means():
    net = PrototypicalNetwork(nn.Identity())
    support_x = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]]])  # class 0: (0,0),(2,0); class 1: (0,4)
    support_y = torch.tensor([[0, 0, 1]])
    query_x = torch.tensor([[[1.0, 1.0]]])
    logits = net.logits(TaskBatch(support_x, support_y, query_x, torch.tensor([[0]])))
    # prototypes (1, 0) and (0, 4): squared distances 1 and 10
    assert torch.equal(logits, torch.tensor([[[-1.0, -10.0]]]))


def test_matching_attends_by_cosine_similarity():
    net = MatchingNetwork(nn.Identity(), scale=1.0, learn_scale=False)
    support_x = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [0.0, 1.0]]])  # class 0, class 1, class 1
    batch = TaskBatch(support_x, torch.tensor([[0, 1, 1]]), torch.tensor([[[5.0, 0.0]]]), torch.tensor([[0]]))
    # cosines 1, 0, 0 -> attention e/(e+2), 1/(e+2), 1/(e+2)
    expected = torch.tensor([math.e, 2.0]) / (math.e + 2)
    torch.testing.assert_close(net.log_probs(batch)[0, 0].exp(), expected)
    torch.testing.assert_close(net.loss(batch), -torch.log(expected[0]))


def test_matching_scale_lifts_the_cosine_loss_floor():
    """20-way 1-shot with one-hot (non-negative, perfectly separable) features: cosine attention
    without a scale gives the right class at most e / (e + 19); the learned scale (10 at the
    start) makes it near certain. Our first Omniglot run sat on that floor (loss 2.3)."""
    support = torch.eye(20)[None]
    batch = TaskBatch(support, torch.arange(20)[None], support[:, :1], torch.tensor([[0]]))
    floor = -math.log(math.e / (math.e + 19))
    assert math.isclose(
        MatchingNetwork(nn.Identity(), 1.0, learn_scale=False).loss(batch).item(), floor, rel_tol=1e-5
    )
    net = MatchingNetwork(nn.Identity())
    assert net.loss(batch).item() < 1e-3 and net.log_scale.requires_grad


def test_each_task_is_normalised_on_its_own():
    torch.manual_seed(0)
    net = PrototypicalNetwork(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False)))
    x = torch.randn(3, 6, 3)
    together = net.embed(x)
    alone = torch.stack([net.encoder(task) for task in x])
    torch.testing.assert_close(together.reshape(alone.shape), alone)


def test_labels_must_cover_every_class():
    net = PrototypicalNetwork(nn.Identity())
    batch = TaskBatch(torch.zeros(1, 2, 2), torch.tensor([[0, 2]]), torch.zeros(1, 1, 2), torch.tensor([[0]]))
    with pytest.raises(MetakitError, match="support examples of all labels 0..2"):
        net.logits(batch)


@pytest.mark.parametrize("learner", [PrototypicalNetwork, MatchingNetwork])
def test_short_run_beats_chance_on_held_out_alphabets(learner, real_omniglot):
    torch.manual_seed(0)
    data = metakit.data.load_omniglot(root=real_omniglot)
    train, test = data.split_by_alphabet(["Korean", "Tagalog"])
    tasks = metakit.tasks.FewShotClassification(train.with_rotations(), ways=5, shots=1, queries=5)
    held_out = metakit.tasks.FewShotClassification(test, ways=5, shots=1, queries=5)
    net = learner(metakit.nets.Conv4(num_classes=None))
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        optimizer.zero_grad()
        net.loss(tasks.sample(4, generator)).backward()
        optimizer.step()
    accuracy = net.accuracy(held_out.sample(200, torch.Generator().manual_seed(1))).mean().item()
    assert accuracy > 0.45, accuracy  # chance is 0.20
