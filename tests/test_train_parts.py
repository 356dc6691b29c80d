"""The pieces of the loop against closed forms: EMA, learning-rate schedule, sharded data order, signals."""

import os
import signal

import pytest
import torch
from torch import nn

from diffkit.config import TrainConfig
from diffkit.ema import EMA, ema_decay
from diffkit.errors import DiffkitError
from diffkit.optimizer import learning_rate, make_optimizer
from diffkit.stop_request import StopRequest
from diffkit.data.synthetic import synthetic_images
from diffkit.seeds import derive_seed
from diffkit.train_data import ShardedBatches

from tiny_run import one_thread

single_thread = pytest.fixture(autouse=True)(one_thread)


def test_ema_decay_warms_up_then_caps():
    assert ema_decay(0, 0.999) == pytest.approx(0.1)
    assert ema_decay(10, 0.999) == pytest.approx(11 / 20)
    assert ema_decay(10**6, 0.999) == 0.999
    assert ema_decay(0, 0.9, warmup=False) == 0.9


def test_ema_matches_the_recursion_by_hand():
    network = nn.Linear(3, 2)
    ema = EMA(network, decay=0.5, warmup=True)
    start = network.weight.detach().clone()
    expected = start.clone()
    for update in range(4):
        with torch.no_grad():
            network.weight.add_(1.0)
        decay = min(0.5, (1 + update) / (10 + update))
        expected = decay * expected + (1 - decay) * network.weight.detach()
        assert ema.update(network) == pytest.approx(decay)
    torch.testing.assert_close(ema.module.weight, expected)
    assert not ema.module.weight.requires_grad


def test_ema_state_round_trip():
    network = nn.Linear(3, 2)
    ema = EMA(network, decay=0.9)
    ema.update(network)
    other = EMA(nn.Linear(3, 2), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1
    torch.testing.assert_close(other.module.weight, ema.module.weight)


def test_learning_rate_warm_up_and_cosine():
    # warmup_fraction=1: warm-up is the full warmup_steps (the default 5% of 110 steps would shorten it to 6).
    train = TrainConfig(lr=1.0, warmup_steps=10, warmup_fraction=1.0, max_steps=110, min_lr_ratio=0.1)
    assert learning_rate(0, train) == pytest.approx(0.1)
    assert learning_rate(9, train) == pytest.approx(1.0)  # the last warm-up step is at the peak
    assert learning_rate(10, train) < 1.0
    assert learning_rate(59, train) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(pi/2) = 0
    assert learning_rate(109, train) == pytest.approx(0.1)  # the last of max_steps is at the minimum
    assert learning_rate(500, train) == pytest.approx(0.1)
    rates = [learning_rate(step, train) for step in range(9, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    constant = TrainConfig(lr=1.0, warmup_steps=0, max_steps=None)
    assert learning_rate(1000, constant) == 1.0


def test_weight_decay_spares_biases():
    optimizer = make_optimizer(nn.Linear(3, 2), TrainConfig(weight_decay=0.1))
    decayed, plain = optimizer.param_groups
    assert [p.ndim for p in decayed["params"]] == [2] and decayed["weight_decay"] == 0.1
    assert [p.ndim for p in plain["params"]] == [1] and plain["weight_decay"] == 0.0


def test_shards_of_two_processes_make_the_one_process_batch():
    data = synthetic_images(size=8, count=40, classes=4)
    single = ShardedBatches(data, batch_size=8, seed=3, rank=0, world_size=1)
    halves = [ShardedBatches(data, batch_size=8, seed=3, rank=rank, world_size=2) for rank in (0, 1)]
    for step in range(12):  # crosses epoch boundaries (5 batches per epoch)
        x0, labels = single.batch(step)
        parts = [shard.batch(step) for shard in halves]
        torch.testing.assert_close(torch.cat([p[0] for p in parts]), x0)
        torch.testing.assert_close(torch.cat([p[1] for p in parts]), labels)


def test_each_epoch_visits_every_image_once_in_a_new_order():
    data = synthetic_images(size=8, count=32, classes=4)
    batches = ShardedBatches(data, batch_size=8, seed=0, rank=0, world_size=1)
    assert batches.steps_per_epoch == 4
    orders = [batches.permutation(epoch) for epoch in range(2)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(32))
    assert orders[0].tolist() != orders[1].tolist()
    again = ShardedBatches(data, batch_size=8, seed=0, rank=0, world_size=1)
    assert again.permutation(1).tolist() == orders[1].tolist()  # a pure function of (seed, epoch)
    x0, _ = batches.batch(5)
    assert x0.dtype == torch.float32 and x0.min() >= -1 and x0.max() <= 1


def test_batches_refuse_uneven_splits_and_small_data():
    data = synthetic_images(size=8, count=16, classes=4)
    with pytest.raises(DiffkitError, match="does not split evenly over 3"):
        ShardedBatches(data, batch_size=8, seed=0, rank=0, world_size=3)
    with pytest.raises(DiffkitError, match="16 images, fewer than train.batch_size=32"):
        ShardedBatches(data, batch_size=32, seed=0, rank=0, world_size=1)


def test_synthetic_images_are_deterministic_and_labelled():
    a, b = synthetic_images(size=8, count=12, classes=3), synthetic_images(size=8, count=12, classes=3)
    assert torch.equal(a.images, b.images) and a.images.dtype == torch.uint8
    assert a.labels.tolist() == [0, 1, 2] * 4 and a.num_classes == 3
    assert not torch.equal(a.images, synthetic_images(size=8, count=12, classes=3, seed=1).images)


def test_synthetic_is_a_dataset_like_any_other_with_a_fresh_test_split():
    from diffkit.data import DATASETS, load_dataset

    assert "synthetic" in DATASETS
    train_split = load_dataset("synthetic", size=8, split="train", count=12, classes=3)
    assert torch.equal(train_split.images, synthetic_images(size=8, count=12, classes=3).images)
    test_split = load_dataset("synthetic", size=8, split="test", count=12, classes=3)
    assert torch.equal(test_split.images, synthetic_images(size=8, count=12, classes=3, seed=1).images)
    with pytest.raises(DiffkitError, match="no option colour"):
        load_dataset("synthetic", colour=3)


def test_derived_seeds_differ_by_stream_and_repeat():
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    assert len({derive_seed(0, stream, 0) for stream in range(5)}) == 5
    assert 0 <= derive_seed(123, 4) < 2**63


def test_stop_request_catches_one_signal_then_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal_name == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) == before  # a second signal acts as usual
    assert signal.getsignal(signal.SIGTERM) == before
