"""Second-order helpers on top of engine.grad: the Hessian and Hessian-vector products.

    from micrograd_c.engine import Value
    from micrograd_c.functional import hessian, hvp
    x, y = Value(1.0), Value(2.0)
    f = x**2 * y + y.exp()
    hessian(f, [x, y])          # [[4.0, 2.0], [2.0, 7.389...]]
    hvp(f, [x, y], [1.0, 0.0])  # the first column, without forming the matrix

Both take a graph already built (f and its inputs), as backward() does, and return floats.
"""
from micrograd_c import engine


def hessian(output, inputs):
    """d2(output)/d(inputs[i]) d(inputs[j]) as a list of rows of floats."""
    inputs = list(inputs)
    gradients = engine.grad(output, inputs, create_graph=True)
    return [[h.data for h in engine.grad(g, inputs)] for g in gradients]


def hvp(output, inputs, vector):
    """The Hessian of output at inputs times vector, as a list of floats: one gradient graph
    and one more backward pass, however many inputs there are."""
    inputs, vector = list(inputs), list(vector)
    if len(vector) != len(inputs):
        raise ValueError(f"hvp() got {len(inputs)} inputs but a vector of {len(vector)}")
    gradients = engine.grad(output, inputs, create_graph=True)
    return [h.data for h in engine.grad(gradients, inputs, grad_outputs=vector)]
