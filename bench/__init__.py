"""irtool's benchmark suite: `python -m bench` measures irtool against its
peers (torch.onnx.export, tf2onnx, torch and TensorFlow eager, onnxruntime on
the peers' files) on a small model zoo and writes bench/results.md,
bench/results.json and bench/results.png.

Speed is never a unit test: nothing here runs under pytest. Every timing is a
median over repeats of time.perf_counter() differences, reported with min-max;
ratios are ours / peer, so below 1 means irtool is faster (or smaller)."""
