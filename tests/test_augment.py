import torch

from ppodd.method.augment import AugDraw, draw_flip_rotate, flip_rotate


def test_flip_rotate_flip_op_mirrors_selected_samples_exactly():
    x = torch.randn(4, 3, 8, 8)
    draw = AugDraw(torch.tensor([True]), torch.tensor([[True, False, True, False]]), torch.zeros(1, 4))
    out = flip_rotate(x, draw)
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])


def test_flip_rotate_zero_angle_is_identity_and_rotation_pads_zeros():
    x = torch.randn(2, 3, 8, 8)
    zero = AugDraw(torch.tensor([False]), torch.zeros(1, 2, dtype=torch.bool), torch.zeros(1, 2))
    torch.testing.assert_close(flip_rotate(x, zero), x)
    ones = torch.ones(1, 3, 8, 8)
    turned = flip_rotate(ones, AugDraw(torch.tensor([False]), torch.zeros(1, 1, dtype=torch.bool),
                                       torch.full((1, 1), 0.26)))
    assert turned[0, :, 0, 0].abs().max() < 0.5          # a corner rotates out of the image
    assert torch.allclose(turned[0, :, 4, 4], torch.ones(3))


def test_flip_rotate_groups_pick_their_own_op():
    x = torch.randn(4, 3, 8, 8)
    draw = AugDraw(torch.tensor([True, False]), torch.ones(2, 2, dtype=torch.bool), torch.zeros(2, 2))
    out = flip_rotate(x, draw)
    assert torch.equal(out[:2], x[:2].flip(-1))
    torch.testing.assert_close(out[2:], x[2:])


def test_draw_flip_rotate_angles_within_15_degrees_and_reproducible():
    a = draw_flip_rotate(3, 1000, torch.Generator().manual_seed(0))
    b = draw_flip_rotate(3, 1000, torch.Generator().manual_seed(0))
    assert torch.equal(a.angle, b.angle) and torch.equal(a.flip, b.flip)
    assert a.angle.abs().max() <= torch.pi / 12
    assert 0.4 < a.flip.float().mean() < 0.6


def test_flip_rotate_is_differentiable_in_the_input():
    x = torch.randn(3, 3, 8, 8, requires_grad=True)
    draw = draw_flip_rotate(1, 3, torch.Generator().manual_seed(1))
    flip_rotate(x, draw).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
