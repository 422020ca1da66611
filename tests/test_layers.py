import torch

from medablate.models.layers import InPlaceGradLinear


def test_same_output_and_gradients_as_nn_linear() -> None:
    torch.manual_seed(0)
    reference = torch.nn.Linear(300, 20)
    torch.manual_seed(0)
    inplace = InPlaceGradLinear(300, 20)
    assert torch.equal(reference.weight, inplace.weight)
    x = torch.randn(8, 300)
    for _ in range(2):  # the second step checks accumulation into the zeroed, persistent buffer
        for layer in (reference, inplace):
            if layer.weight.grad is not None:
                layer.weight.grad.zero_()
                layer.bias.grad.zero_()
            layer(x).square().sum().backward()
        assert torch.equal(reference.weight.grad, inplace.weight.grad)
        assert torch.equal(reference.bias.grad, inplace.bias.grad)


def test_gradient_buffer_is_reused_not_reallocated() -> None:
    layer = InPlaceGradLinear(64, 4)
    x = torch.randn(5, 64)
    layer(x).sum().backward()
    buffer = layer.weight.grad.data_ptr()
    layer.weight.grad.zero_()
    layer(x).sum().backward()
    assert layer.weight.grad.data_ptr() == buffer


def test_gradcheck_in_double_with_input_gradient() -> None:
    layer = InPlaceGradLinear(6, 3).double()
    x = torch.randn(4, 6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))
