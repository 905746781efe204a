"""Coverage-guided fuzzing (atheris, libFuzzer) of irtool's file parsers.

    python scripts/fuzz_atheris.py onnx [libFuzzer flags, e.g. -runs=100000 -max_total_time=600]
    python scripts/fuzz_atheris.py irz  [...]

Each target feeds the fuzzer's bytes to one parser, seeded with valid files
(a small MLP/CNN as ONNX and as .irz) so mutations start from real structure:
`onnx` -> irtool.import_onnx (and, when that succeeds, the numpy runtime on
zeros), `irz` -> irtool.ir.serialize.from_bytes. A typed irtool error is the
expected answer to bad bytes; any other exception is a finding: libFuzzer
stops, prints the traceback and writes the input as crash-<sha1> in the
current folder (rerun it: `python scripts/fuzz_atheris.py onnx crash-...`).
Only irtool's own modules are instrumented for coverage. tests/test_fuzz.py
runs a short pass of each target in CI; the hypothesis fuzzers there cover
the same parsers without coverage guidance.
"""
import os
import sys
import tempfile

import atheris

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["irtool"]):
    import numpy as np

    import irtool
    from irtool.errors import IRToolError
    from irtool.ir import serialize


def _seed_graphs():
    rng = np.random.default_rng(0)
    b = irtool.Builder("mlp")
    x = b.input("x", "float32", ("batch", 4))
    w = b.param("w", rng.standard_normal((4, 3)).astype(np.float32))
    y = b.softmax(b.add(b.matmul(x, w), 1.0), axis=-1)
    mlp = b.build([y])
    b = irtool.Builder("cnn")
    x = b.input("x", "float32", (1, 2, 6, 6))
    k = b.param("k", rng.standard_normal((3, 2, 3, 3)).astype(np.float32))
    h = b.max_pool(b.relu(b.conv(x, k, pads=(1, 1, 1, 1))), kernel=(2, 2), strides=(2, 2))
    cnn = b.build([b.reduce_mean(h, axes=(2, 3))])
    return [mlp, cnn]


def _seeds(target):
    graphs = _seed_graphs()
    if target == "onnx":
        return [irtool.export_onnx(g).SerializeToString() for g in graphs]
    return [serialize.to_bytes(g) for g in graphs]


def _zeros(v):
    return np.zeros([d if isinstance(d, int) else 1 for d in v.shape], dtype=v.dtype)


def fuzz_onnx(data):
    try:
        graph = irtool.import_onnx(bytes(data))
    except IRToolError:
        return
    try:
        irtool.run(graph, [_zeros(v) for v in graph.inputs])
    except IRToolError:
        pass


def fuzz_irz(data):
    try:
        serialize.from_bytes(bytes(data))
    except IRToolError:
        pass


TARGETS = {"onnx": fuzz_onnx, "irz": fuzz_irz}


def main(argv):
    if len(argv) < 2 or argv[1] not in TARGETS:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    target, flags = argv[1], argv[2:]
    corpus = tempfile.mkdtemp(prefix=f"irtool-{target}-corpus-")
    for i, seed in enumerate(_seeds(target)):
        with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
            f.write(seed)
    files = [a for a in flags if not a.startswith("-")]
    # libFuzzer reads its corpus folder (or replays the crash files given)
    atheris.Setup([argv[0]] + flags + ([] if files else [corpus]), TARGETS[target])
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
