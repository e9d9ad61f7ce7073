"""MANN: the LRUA memory by hand, causality of the label input, fresh memory per episode, the
sequence episodes, a short run that learns, and clear errors."""
import io
import math

import pytest
import torch
import torch.nn.functional as F

from metakit import MetakitError
from metakit.experiment.mann import accuracy_by_instance, instance_numbers, nearest_neighbour
from metakit.memory import MANN, LRUAMemory, LSTMBaseline
from metakit.memory.mann import EMPTY, ImageEncoder
from metakit.tasks import SequenceEpisodes


def test_lrua_writes_to_the_least_used_slot_and_usage_decays_by_gamma():
    memory = LRUAMemory(slots=3, slot_size=2, reads=1, gamma=0.5)
    state = memory.initial_state(1, "cpu", torch.float32)
    state["usage"] = torch.tensor([[0.9, 0.1, 0.6]])  # slot 1 is the least used ...
    state["least_used"] = torch.tensor([[0.0, 1.0, 0.0]])
    state["read_weights"] = torch.tensor([[[1.0, 0.0, 0.0]]])
    state["memory"] = torch.tensor([[[1.0, 0.0], [5.0, 5.0], [0.0, 1.0]]])
    key = torch.tensor([[[0.0, 2.0]]])
    read, new = memory.step(state, key, torch.tensor([[0.0]]))  # gate 0: write where least used
    # by hand: slot 1 is emptied (least used: EMPTY in each entry), then receives the key; the
    # others keep their rows
    expected_memory = torch.tensor([[[1.0, 0.0], [EMPTY, 2.0 + EMPTY], [0.0, 1.0]]])
    torch.testing.assert_close(new["memory"], expected_memory)
    # reads: softmax over slots of cosine(key, row of the memory before the write): cosines 0,
    # 1/sqrt(2), 1 (against the new memory slot 1 would be the key itself, cosine 1)
    weights = torch.tensor([0.0, 0.5 ** 0.5, 1.0]).softmax(0)
    torch.testing.assert_close(new["read_weights"][0, 0], weights)
    torch.testing.assert_close(read[0, 0], weights @ expected_memory[0])
    # usage = gamma * usage + read weights + write weights (write went to slot 1)
    usage = 0.5 * torch.tensor([0.9, 0.1, 0.6]) + weights + torch.tensor([0, 1.0, 0])
    torch.testing.assert_close(new["usage"][0], usage)
    assert new["least_used"][0].tolist() == [1.0, 0.0, 0.0]  # now slot 0 has the smallest usage
    # gate 1: the write goes where the previous read went
    _, shared = memory.step(state, key, torch.tensor([[1.0]]))
    torch.testing.assert_close(shared["memory"][0, 0], torch.tensor([1.0, 2.0]))


def test_key_strength_sharpens_the_reads_and_a_write_vector_is_written_instead_of_the_key():
    memory = LRUAMemory(slots=3, slot_size=2, reads=1, gamma=0.5)
    state = memory.initial_state(1, "cpu", torch.float32)
    state["memory"] = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    key, gate = torch.tensor([[[0.0, 2.0]]]), torch.tensor([[0.0]])
    cosines = torch.tensor([0.0, 0.5**0.5, 1.0])
    for beta in (1.0, 20.0):  # beta 1 is the paper's read; 20 all but picks the best slot
        _, new = memory.step(state, key, gate, strengths=torch.tensor([[beta]]))
        torch.testing.assert_close(new["read_weights"][0, 0], (beta * cosines).softmax(0))
    assert new["read_weights"][0, 0, 2] > 0.99
    written = torch.tensor([[[3.0, -1.0]]])
    _, new = memory.step(state, key, gate, writes=written)
    # slot 0, the least used at the start, is emptied and receives the write vector, not the key
    torch.testing.assert_close(new["memory"][0, 0], written[0, 0])
    torch.testing.assert_close(new["memory"][0, 1:], state["memory"][0, 1:])
    # read_after_write: the key meets the memory with this step's write in slot 0 (cosine of
    # (0, 2) with (3, -1) is -1/sqrt(10)); before the write slot 0 held (1, 0), cosine 0
    _, new = memory.step(state, key, gate, writes=written, read_after_write=True)
    after = torch.tensor([-(0.1**0.5), 0.5**0.5, 1.0])
    torch.testing.assert_close(new["read_weights"][0, 0], after.softmax(0))
    model = MANN(6, 4, 16, slots=8, slot_size=5, reads=2, key_strength=True, write_vector=True)
    assert model(*_episode()).shape == (3, 8, 4)


def _episode(batch=3, steps=8, size=6, classes=4):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, steps, 1, size, size, generator=g)
    return x, torch.randint(classes, (batch, steps), generator=g)


SMALL_MEMORY = {"slots": 8, "slot_size": 5, "reads": 2}


@pytest.mark.parametrize("model", [MANN(6, 4, 16, **SMALL_MEMORY), LSTMBaseline(6, 4, 16),
                                   MANN(6, 4, 16, **SMALL_MEMORY, key_strength=True, write_vector=True),
                                   MANN(6, 4, 16, **SMALL_MEMORY, encoder="pixels+conv", encoder_channels=3),
                                   MANN(6, 4, 16, **SMALL_MEMORY, write_vector=True, input_keys=True),
                                   MANN(6, 4, 16, **SMALL_MEMORY, write_vector=True, bind_writes=True),
                                   MANN(6, 4, 16, **SMALL_MEMORY, write_vector=True, input_keys=True,
                                        bind_writes=True),
                                   LSTMBaseline(6, 4, 16, encoder="conv", encoder_channels=3)])
def test_the_label_of_step_t_reaches_only_later_steps_and_episodes_are_independent(model):
    x, y = _episode()
    logits = model(x, y)
    for t in (0, 3, 7):
        changed = y.clone()
        changed[:, t] = (changed[:, t] + 1) % 4
        other = model(x, changed)
        torch.testing.assert_close(other[:, :t + 1], logits[:, :t + 1])  # no leak of y_t into step t
        if t < 7:
            assert (other[:, t + 1] - logits[:, t + 1]).abs().max() > 1e-6  # it does reach step t + 1
    # the memory starts afresh: an episode's outputs do not depend on the others in its batch or
    # on an episode seen before
    alone = model(x[1:2], y[1:2])
    torch.testing.assert_close(alone[0], logits[1], rtol=1e-5, atol=1e-6)
    model(x.flip(0), y.flip(0))
    torch.testing.assert_close(model(x[1:2], y[1:2]), alone)


@pytest.mark.parametrize("seed", [43, 49, 69])
def test_slots_that_tie_in_usage_tie_exactly_in_a_batch_too(seed):
    """Weights (seeds) under which, with batched matmuls and erased slots zeroed (not EMPTY), two
    slots tied in usage came out an ulp apart in a batch of 3 but not alone, so the least-used slot
    chosen, and the episode's outputs from step 4 on (by 1e-3), depended on its batch-mates."""
    torch.manual_seed(seed)
    model = MANN(6, 4, 16, **SMALL_MEMORY)
    x, y = _episode()
    torch.testing.assert_close(model(x[1:2], y[1:2])[0], model(x, y)[1], rtol=1e-5, atol=1e-6)


def test_sequence_episodes_hold_each_class_per_class_times_with_fresh_labels():
    classes, drawings = 12, 20
    ids = torch.arange(classes * drawings, dtype=torch.uint8).view(classes, drawings, 1, 1)
    episodes = SequenceEpisodes(ids.expand(-1, -1, 3, 3).contiguous(), classes=5, per_class=10)
    x, y = episodes.sample(64, torch.Generator().manual_seed(0))
    assert x.shape == (64, 50, 1, 3, 3) and y.shape == (64, 50) and x.max() <= 1
    assert (F.one_hot(y, 5).sum(1) == 10).all()  # 5 labels, 10 presentations each
    ids = (x[:, :, 0, 0, 0] * 255).round().long()  # image id = class * drawings + drawing
    for e in range(64):
        source = ids[e] // drawings
        assert len(set(ids[e].tolist())) == 50  # 50 different drawings
        for label in range(5):  # one class per label, one label per class
            assert len(set(source[y[e] == label].tolist())) == 1
    first_class = [int((ids[e] // drawings)[y[e] == 0][0]) for e in range(64)]
    assert len(set(first_class)) > 5  # label 0 is a different class from episode to episode
    assert len({tuple(y[e, :10].tolist()) for e in range(64)}) > 50  # and the order is random
    instances = instance_numbers(y, 5)
    assert (F.one_hot(instances - 1, 10).sum(1) == 5).all()  # instances 1..10, five times each


def test_augmented_episodes_move_each_image_by_at_most_the_shift_and_keep_labels():
    images = torch.zeros(6, 10, 20, 20, dtype=torch.uint8)
    images[:, :, 8:12, 8:12] = 255  # a square in the middle: moving it loses no ink
    plain = SequenceEpisodes(images, 5, 10).sample(4, torch.Generator().manual_seed(0))
    moved = SequenceEpisodes(images, 5, 10, shift=2, rotate=15).sample(4, torch.Generator().manual_seed(0))
    assert torch.equal(plain[1], moved[1])  # the same classes, order and labels
    ink = moved[0].sum((-1, -2, -3))
    torch.testing.assert_close(ink, torch.full_like(ink, 16.0), rtol=0.01, atol=0)  # bilinear: ~0.2% lost
    grid = torch.arange(20.0)
    rows, columns = (moved[0] * grid[:, None]).sum((-1, -2, -3)), (moved[0] * grid).sum((-1, -2, -3))
    centre = torch.stack([rows, columns], -1)
    offset = centre / ink[..., None] - 9.5  # the square's centre was (9.5, 9.5)
    assert offset.abs().max() <= 2 + 1e-4 and (offset.norm(dim=-1) > 0.1).float().mean() > 0.9
    with pytest.raises(MetakitError, match="shift must be a number in"):
        SequenceEpisodes(images, 5, 10, shift=-1)


def test_accuracy_by_instance_and_the_nearest_neighbour_by_hand():
    y = torch.tensor([[0, 1, 0, 1, 0]])
    instances = instance_numbers(y, 2)
    assert instances.tolist() == [[1, 1, 2, 2, 3]]
    correct = torch.tensor([[True, False, True, False, True]])
    means, _ = accuracy_by_instance(correct, instances, [1, 2, 3])
    assert means == {"1": 50.0, "2": 50.0, "3": 100.0}
    x = torch.tensor([0.0, 10.0, 0.1, 9.0, 0.2]).view(1, 5, 1, 1, 1)
    guesses = nearest_neighbour(x, y, 2, torch.Generator().manual_seed(0))
    assert guesses[0, 1:].tolist() == [0, 0, 1, 0]  # step 1 sees only step 0; later ones find their twin


def test_a_short_run_lifts_second_instance_accuracy_above_chance():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    prototypes = torch.rand(60, 1, 8, 8, generator=g) > 0.5  # 60 classes of noisy 8 x 8 patterns
    images = (prototypes ^ (torch.rand(60, 10, 8, 8, generator=g) < 0.05)).to(torch.uint8) * 255
    episodes = SequenceEpisodes(images, classes=5, per_class=4)
    model = MANN(8, 5, controller_size=64, slots=32, slot_size=16, reads=1)
    optimizer = torch.optim.Adam(model.parameters(), 5e-3)
    for _ in range(200):
        x, y = episodes.sample(16, g)
        loss = F.cross_entropy(model(x, y).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x, y = episodes.sample(400, torch.Generator().manual_seed(5))
        correct = model(x, y).argmax(-1) == y
    means, _ = accuracy_by_instance(correct, instance_numbers(y, 5), [2])
    assert means["2"] > 26, means  # chance is 20 (about 31 after these 200 updates)


def test_bad_inputs_name_their_shapes():
    model = MANN(6, 4, 16, slots=8, slot_size=5, reads=2)
    x, y = _episode()
    with pytest.raises(MetakitError, match=r"x must be \[episodes, steps, 1, 6, 6\] images, got \(3, 8, 1"):
        model(torch.rand(3, 8, 1, 7, 7), y)
    with pytest.raises(MetakitError, match=r"labels must be in \[0, 4\), got values in \[0, 4\]"):
        model(x, y.clamp(max=3).index_fill(1, torch.tensor([2]), 4))
    with pytest.raises(MetakitError, match=r"y must be long labels \[episodes, steps\] = \(3, 8\) like x, "
                                           r"got torch.int64 \(3, 7\)"):
        model(x, y[:, :7])
    with pytest.raises(MetakitError, match="gamma .* must be in \\[0, 1\\], got 1.5"):
        MANN(gamma=1.5)
    with pytest.raises(MetakitError, match="MANN reads must be an integer >= 1, got 0"):
        MANN(reads=0)
    with pytest.raises(MetakitError, match=r"encoder must be one of \[.*'conv4'\], got 'cnn'"):
        LSTMBaseline(encoder="cnn")


def test_reproduce_smoke_writes_the_table_and_load_gives_the_model_back(real_omniglot, tmp_path, cli):
    import json

    import metakit

    code, out, err = cli("reproduce", "mann-omniglot", "--budget", "smoke", "--out", tmp_path, "--quiet")
    assert code == 0, err
    assert "mann-omniglot: percent correct at each presentation" in out and "human (paper)" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["accuracy_by_instance"]) == {"mann", "lstm", "nearest-neighbour"}
    assert set(results["accuracy_by_instance"]["mann"]) == {"1", "2", "3", "4", "5", "10"}
    assert results["paper"]["mann"]["2"] == 82.8 and (tmp_path / "accuracy_by_instance.png").is_file()
    algo = metakit.load(tmp_path / "omniglot-mann-conv4")
    assert isinstance(algo.model, MANN) and algo.model.bind_writes and algo.model.encoder.frozen
    x, y = algo.episodes.sample(2, torch.Generator().manual_seed(0))
    assert algo.model(x, y).shape == (2, 50, 5)


def test_the_cosine_schedule_decays_to_zero_and_a_checkpoint_carries_its_place(real_omniglot):
    from metakit.experiment.config import load_config
    from metakit.experiment.mann import SequenceExperiment

    config = load_config("omniglot-mann", [
        "algorithm.lr_schedule=cosine", "algorithm.lr=0.01", "train.iterations=8", "train.meta_batch_size=2",
        "algorithm.controller_size=8", "algorithm.slots=6", "algorithm.slot_size=4", "algorithm.reads=2",
        "algorithm.encoder=pixels", "task.reflections=true"])
    first = SequenceExperiment(config)
    assert first.learning_rate() == 0.01  # update 0: the full rate
    first.updates = 4
    assert abs(first.learning_rate() - 0.005) < 1e-12  # half way: half the rate
    first.updates = 8
    assert first.learning_rate() == 0.0
    first.updates = 0
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        first.step(generator)
    # the third update (index 2) ran at 0.01 (1 + cos(2 pi / 8)) / 2
    assert abs(first.optimizer.param_groups[0]["lr"] - 0.005 * (1 + math.cos(math.pi / 4))) < 1e-12
    # a fresh experiment from the checkpoint takes the same next updates (same rates, same weights)
    second = SequenceExperiment(config)
    checkpoint = io.BytesIO()  # through bytes, as a checkpoint file: no state shared with `first`
    torch.save(first.state_dict(), checkpoint)
    checkpoint.seek(0)
    second.load_state_dict(torch.load(checkpoint, weights_only=True))
    assert second.updates == 3
    state = generator.get_state()
    for experiment in (first, second):
        generator.set_state(state)
        experiment.step(generator)
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
    # a checkpoint from before the schedule existed: its place is Adam's step count
    old = first.state_dict()
    del old["updates"]
    second.load_state_dict(old)
    assert second.updates == 4


def test_the_conv4_encoder_pretrains_as_a_prototypical_network_then_freezes(real_omniglot, monkeypatch):
    from metakit.experiment.config import load_config
    from metakit.experiment.mann import SequenceExperiment
    from metakit.experiment.runner import _mean

    config = load_config("omniglot-mann", [
        "algorithm.encoder=conv4", "algorithm.encoder_channels=4", "algorithm.pretrain_iterations=3",
        "algorithm.pretrain_ways=5", "algorithm.pretrain_queries=2", "train.iterations=6",
        "train.meta_batch_size=2", "algorithm.controller_size=8", "algorithm.slots=6",
        "algorithm.slot_size=4", "algorithm.reads=2"])
    run = SequenceExperiment(config)
    embedding = run.model.encoder.embedding
    others = [p for name, p in run.model.named_parameters() if not name.startswith("encoder.embedding.")]
    others_before = [p.detach().clone() for p in others]
    before = {k: v.clone() for k, v in embedding.state_dict().items()}
    batches = []
    logits = run.prototypes.logits
    monkeypatch.setattr(run.prototypes, "logits", lambda batch: batches.append(batch) or logits(batch))
    generator = torch.Generator().manual_seed(0)
    metrics = [run.step(generator) for _ in range(3)]
    assert all(set(m) == {"pretrain_loss", "pretrain_accuracy"} for m in metrics)
    # each pretraining episode: one drawing of each of the 5 classes the support, 2 more the queries
    for batch in batches:
        assert sorted(batch.support_y[0].tolist()) == list(range(5))
        assert sorted(batch.query_y[0].tolist()) == sorted(list(range(5)) * 2)
    # pretraining moves the embedding (weights and running statistics) and nothing else
    after = {k: v.clone() for k, v in embedding.state_dict().items()}
    assert all(not torch.equal(before[k], after[k]) for k in after if k.endswith(("weight", "running_mean")))
    assert all(torch.equal(a, b) for a, b in zip(others_before, others))
    # then it is frozen: in eval mode even under model.train(), unchanged while the recurrence trains
    assert run.model.encoder.frozen and not any(p.requires_grad for p in embedding.parameters())
    run.model.train()
    assert not embedding.training and run.model.controller.training
    assert set(run.step(generator)) == {"loss", "accuracy"}
    assert all(torch.equal(after[k], v) for k, v in embedding.state_dict().items())
    assert all(not torch.equal(a, b) for a, b in zip(others_before, others) if a.dim() == 2)
    # a checkpoint after the pretraining brings the frozen encoder back, and the same next update
    second = SequenceExperiment(config)
    checkpoint = io.BytesIO()
    torch.save(run.state_dict(), checkpoint)
    checkpoint.seek(0)
    second.load_state_dict(torch.load(checkpoint, weights_only=True))
    assert second.model.encoder.frozen and not second.model.encoder.embedding.training
    state = generator.get_state()
    for experiment in (run, second):
        generator.set_state(state)
        experiment.step(generator)
    for a, b in zip(run.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    # the log's rows average each metric over the updates that report it (phases report different ones)
    rows = [{"pretrain_loss": 1.0}, {"loss": 2.0}, {"loss": 4.0}]
    assert _mean(rows) == {"pretrain_loss": 1.0, "loss": 3.0}
    # mistakes
    with pytest.raises(MetakitError, match=r"pretrain_iterations \(3\) pretrains the conv4 encoder; "
                                           r"algorithm.encoder is 'pixels'"):
        SequenceExperiment(load_config("omniglot-mann", ["algorithm.encoder=pixels",
                                                         "algorithm.pretrain_iterations=3"]))
    with pytest.raises(MetakitError, match=r"pretrain_iterations \(6\) must be below train.iterations \(6\)"):
        SequenceExperiment(load_config("omniglot-mann", ["algorithm.encoder=conv4", "train.iterations=6",
                                                         "algorithm.pretrain_iterations=6"]))
    with pytest.raises(MetakitError, match="bind_writes shapes the write vectors: it needs write_vector"):
        MANN(bind_writes=True)
    with pytest.raises(MetakitError, match="only the conv4 encoder can be frozen, this one is 'pixels'"):
        MANN(encoder="pixels").encoder.freeze()


def test_a_frozen_conv4_encoder_gives_the_features_of_its_eval_mode():
    torch.manual_seed(0)
    encoder = ImageEncoder(20, "conv4", 8)
    x = (torch.rand(3, 7, 1, 20, 20) > 0.8).float()
    encoder(x)  # training mode: moves the running statistics away from their start
    encoder.eval()
    with torch.no_grad():
        expected = encoder(x)
    encoder.freeze()
    encoder.train()  # the embedding stays in eval mode (running statistics) without gradients
    features = encoder(x)  # its layer norm still trains with the recurrence
    assert features.shape == (3, 7, 8) and not encoder.embedding(x.flatten(0, 1)).requires_grad
    assert torch.allclose(features, expected, atol=1e-5)
