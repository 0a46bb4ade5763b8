"""BBN's two streams: BBNStreamDataset and BBNPairSampler (uniform and
reversed images, interleaved in pairs)."""
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample

from mmlongtail.datasets import BBNPairSampler, BBNStreamDataset
from mmlongtail.registry import DATA_SAMPLERS
from sampler_helpers import CatListDataset

# one class per image, so a drawn class is the image's class; n = 8, 4, 2, 1
CATS = [[0]] * 8 + [[1]] * 4 + [[2]] * 2 + [[3]]
N = len(CATS)


def test_reversed_stream_class_weights_are_inverse_counts():
    s = BBNPairSampler(BBNStreamDataset(CatListDataset(CATS)),
                       num_samples=40000, seed=7)
    n = np.array([8, 4, 2, 1], dtype=np.float64)
    expected = (1 / n) / (1 / n).sum()  # official: (n_max / n) / sum
    np.testing.assert_allclose(s.class_probabilities(0), expected,
                               rtol=1e-12)
    uniform, reversed_ = s.epoch_pairs(0)
    labels = torch.tensor([c[0] for c in CATS])
    freq = torch.bincount(labels[reversed_], minlength=4).double() / 40000
    # 40000 draws: standard error <= 0.0025, so 0.01 is four of them
    np.testing.assert_allclose(freq.numpy(), expected, atol=0.01)
    # the conventional stream is uniform over images: whole permutations
    for k in range(0, 40000 - N, N):
        assert sorted(uniform[k:k + N].tolist()) == list(range(N))


def test_interleaved_pairs_deterministic_and_resumable():
    streams = BBNStreamDataset(CatListDataset(CATS))
    s = DATA_SAMPLERS.build(
        dict(type='mmlongtail.BBNPairSampler', seed=3), default_args=dict(
            dataset=streams))
    first = list(s)
    assert len(first) == len(s) == 2 * N
    assert all(i < N for i in first[0::2])  # conventional: [0, N)
    assert all(N <= i < 2 * N for i in first[1::2])  # re-balancing
    again = BBNPairSampler(streams, seed=3)
    assert list(again) == first
    s.set_epoch(1)
    again.set_epoch(1)
    assert list(s) == list(again) != first  # epoch 1 replays, differs


def test_ranks_take_whole_pairs():
    streams = BBNStreamDataset(CatListDataset(CATS))
    whole = BBNPairSampler(streams, seed=5).epoch_indices(0)
    shares = []
    for rank in range(2):
        s = BBNPairSampler(streams, seed=5)
        s.rank, s.world_size = rank, 2
        share = list(s)
        assert len(share) == len(s) == 2 * ((N + 1) // 2)
        assert all(i < N for i in share[0::2])
        assert all(i >= N for i in share[1::2])
        shares.append(torch.tensor(share).view(-1, 2))
    pairs = whole.view(-1, 2)
    assert torch.equal(shares[0], pairs[0::2])
    assert torch.equal(shares[1][:N // 2], pairs[1::2])
    assert torch.equal(shares[1][-1], pairs[0])  # round_up pads with a pair


def test_stream_dataset_tags_and_bad_input():
    class Packed(CatListDataset):

        def __getitem__(self, idx):
            return dict(inputs=torch.zeros(1),
                        data_samples=DetDataSample(metainfo=dict(i=idx)))

    streams = BBNStreamDataset(Packed(CATS))
    assert len(streams) == 2 * N
    a, b = streams[2], streams[N + 2]
    assert a['data_samples'].bbn_stream == 0
    assert b['data_samples'].bbn_stream == 1
    assert a['data_samples'].i == b['data_samples'].i == 2
    with pytest.raises(IndexError, match=r'\[0, 30\)'):
        streams[2 * N]
    with pytest.raises(TypeError, match='PackDetInputs'):
        BBNStreamDataset(CatListDataset(CATS))[0]
    with pytest.raises(TypeError, match='BBNStreamDataset'):
        BBNPairSampler(CatListDataset(CATS), seed=0)
    with pytest.raises(ValueError, match='infinite'):
        BBNPairSampler(streams, seed=0, infinite=True)
