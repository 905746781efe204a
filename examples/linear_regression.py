"""The comparison article's program, once for each framework, trained in the IR.

y = 3x + 2 + noise, 100 points, MSE loss, SGD with lr 0.1, 1000 full-batch
steps. Each framework's model is traced into the IR and trained there from the
same initial weights as the framework's own training loop; the per-step losses
are compared, and the same run goes through the exported ONNX training step on
onnxruntime. Run: python examples/linear_regression.py
"""
import os

import numpy as np

import irtool
import irtool.frontends.tf_trace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

STEPS, LR = 1000, 0.1


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random(100).astype(np.float32)
    y = (3 * x + 2 + rng.normal(0, 0.1, 100)).astype(np.float32)
    return x.reshape(-1, 1), y.reshape(-1, 1)


def train_in_ir(graph, x, y, backend="numpy"):
    """Per-step losses and final params of IR training (MSE, SGD lr 0.1)."""
    trainer = irtool.Trainer(graph, loss="mse", optimizer=irtool.optim.SGD(LR), backend=backend)
    losses = [trainer.step(x, y) for _ in range(STEPS)]
    return np.array(losses), trainer.params


def pytorch(x, y, seed=0):
    """The article's PyTorch program as a module; returns (graph, losses, w, b)
    where losses/w/b come from torch's own training loop."""
    import torch

    class LinearRegression(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(1, 1))
            self.b = torch.nn.Parameter(torch.zeros(1, 1))

        def forward(self, x):
            return x.mm(self.w) + self.b

    torch.manual_seed(seed)
    model = LinearRegression()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    graph = irtool.trace(model, (xt,), dynamic_shapes={"x": {0: "n"}})   # traced before training
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = torch.mean((yt - model(xt)) ** 2)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return graph, np.array(losses), model.w.item(), model.b.item()


def tensorflow2(x, y, seed=0):
    """The TensorFlow program in TF2 style: variables, GradientTape, SGD."""
    import tensorflow as tf

    class LinearRegression(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.random.normal([1], seed=seed), name="weight")
            self.b = tf.Variable(tf.zeros([1]), name="bias")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def __call__(self, x):
            return self.w * x + self.b

    tf.random.set_seed(seed)
    model = LinearRegression()
    xs, ys = x.ravel(), y.ravel()
    graph = irtool.trace(model)                       # traced before training
    optimizer = tf.keras.optimizers.SGD(LR)
    losses = []
    for _ in range(STEPS):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(ys - model(xs)))
        optimizer.apply_gradients(zip(tape.gradient(loss, [model.w, model.b]), [model.w, model.b]))
        losses.append(float(loss))
    return graph, np.array(losses), float(model.w[0]), float(model.b[0])


def tensorflow1(x, y, seed=0):
    """The article's original TF1 program, placeholders and a Session, via
    tf.compat.v1; the graph is traced from the session before training."""
    import tensorflow as tf
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(seed)
        xp = v1.placeholder(tf.float32, name="x")
        yp = v1.placeholder(tf.float32, name="y")
        w = tf.Variable(v1.random_normal([1]), name="weight")
        b = tf.Variable(tf.zeros([1]), name="bias")
        y_pred = w * xp + b
        loss = tf.reduce_mean(tf.square(yp - y_pred))
        train = v1.train.GradientDescentOptimizer(LR).minimize(loss)
        init = v1.global_variables_initializer()
    xs, ys = x.ravel(), y.ravel()
    with v1.Session(graph=g) as sess:
        sess.run(init)
        # the placeholder has no shape: say it is a vector of n values
        graph = irtool.frontends.tf_trace.trace_tf1(g, inputs=["x"], outputs=[y_pred.name], session=sess,
                                                    input_shapes={"x": [None]}, dynamic_shapes={"x": {0: "n"}})
        losses = []
        for _ in range(STEPS):
            _, value = sess.run([train, loss], feed_dict={xp: xs, yp: ys})
            losses.append(value)
        wv, bv = sess.run([w, b])
    return graph, np.array(losses), float(wv[0]), float(bv[0])


def inputs_for(name, x, y):
    """The pytorch program takes (100, 1) columns; the TensorFlow ones 1-D vectors."""
    return (x, y) if name == "pytorch" else (x.ravel(), y.ravel())


FRAMEWORKS = {"pytorch": pytorch, "tensorflow2": tensorflow2, "tensorflow1": tensorflow1}


def main():
    x, y = data()
    print(f"{'program':<36} {'w':>8} {'b':>8} {'max |loss diff| vs framework':>30}")
    for name, program in FRAMEWORKS.items():
        graph, framework_losses, w, b = program(x, y)
        print(f"{name + ' (framework)':<36} {w:8.4f} {b:8.4f}")
        for backend in ("numpy", "onnxruntime"):
            losses, params = train_in_ir(graph, *inputs_for(name, x, y), backend)
            pw, pb = (float(np.ravel(v)[0]) for v in params.values())
            diff = np.abs(losses - framework_losses).max()
            print(f"{name + ' in the IR, ' + backend:<36} {pw:8.4f} {pb:8.4f} {diff:30.2e}")


if __name__ == "__main__":
    main()
