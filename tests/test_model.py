import torch
from helpers import gen

from ppodd.method.model import forward, init_params, num_params


def test_num_params_convnet128_matches_spec():
    # §6: 320,010 weights for K = 10 and 504,420 for K = 100.
    assert num_params(init_params(10, 128, 3, 32, gen())) == 320_010
    assert num_params(init_params(100, 128, 3, 32, gen())) == 504_420


def test_init_params_bounds_follow_pytorch_default():
    params = init_params(10, 128, 3, 32, gen())
    conv1, bias1, scale1, shift1 = params[:4]
    bound = 1 / (3 * 9) ** 0.5
    assert conv1.abs().max() <= bound and conv1.abs().max() > 0.9 * bound
    assert bias1.abs().max() <= bound
    assert torch.equal(scale1, torch.ones(128)) and torch.equal(shift1, torch.zeros(128))
    assert params[-2].abs().max() <= 1 / 2048 ** 0.5


def test_init_params_same_seed_same_weights_nets_dimension_leads():
    a = init_params(10, 8, 3, 32, gen(1), nets=4)
    b = init_params(10, 8, 3, 32, gen(1), nets=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a[0].shape == (4, 8, 3, 3, 3)
    assert not torch.equal(a[0][0], a[0][1])


def test_forward_matches_module_convnet():
    params = init_params(10, 8, 3, 32, gen())
    blocks = []
    c_in = 3
    for i in range(3):
        conv = torch.nn.Conv2d(c_in, 8, 3, padding=1)
        norm = torch.nn.GroupNorm(8, 8)
        conv.weight.data, conv.bias.data = params[4 * i], params[4 * i + 1]
        norm.weight.data, norm.bias.data = params[4 * i + 2], params[4 * i + 3]
        blocks += [conv, norm, torch.nn.ReLU(), torch.nn.AvgPool2d(2)]
        c_in = 8
    fc = torch.nn.Linear(8 * 4 * 4, 10)
    fc.weight.data, fc.bias.data = params[-2], params[-1]
    module = torch.nn.Sequential(*blocks, torch.nn.Flatten(), fc)
    x = torch.randn(5, 3, 32, 32, generator=gen(2))
    torch.testing.assert_close(forward(params, x), module(x))
