"""State shared by the sections of one run: repeat counts, a scratch
folder, and caches (traced graphs, exported files) so that sections run
alone (--only) or together do each expensive thing once."""
import contextlib
import dataclasses
import io
import logging
import os
import sys
import warnings


@dataclasses.dataclass
class Repeats:
    convert: int
    process: int
    latency: int
    infer: int
    train: int
    budget_s: float             # stop repeating one measurement after this much timed work


FULL = Repeats(convert=5, process=3, latency=100, infer=30, train=20, budget_s=8.0)
QUICK = Repeats(convert=2, process=1, latency=10, infer=5, train=3, budget_s=1.0)


class Context:
    def __init__(self, quick, workdir, models=None, threads=2):
        self.quick = quick
        self.threads = threads
        self.repeats = QUICK if quick else FULL
        self.workdir = workdir
        self.models = models            # None: all
        self.notes = []                 # what was not measured, and why
        self._torch_cases = None
        self._keras_cases = None
        self.graphs = {}                # model name -> irtool graph
        self.files = {}                 # (model name, converter) -> ONNX path

    def path(self, name):
        return os.path.join(self.workdir, name)

    def wanted(self, name):
        return self.models is None or name in self.models

    def torch_cases(self):
        if self._torch_cases is None:
            from bench.zoo import torch_cases
            names = [n for n in ("mlp", "cnn", "bert", "gpt2") if self.wanted(n)]
            self._torch_cases = torch_cases(names) if names else []
        return self._torch_cases

    def keras_cases(self):
        """Keras cases, or [] with a note when irtool cannot trace Keras."""
        if self._keras_cases is None:
            self._keras_cases = []
            names = [n for n in ("keras_cnn", "mobilenet_v2") if self.wanted(n)]
            if names:
                from bench.zoo import tf_frontend_missing
                why = tf_frontend_missing()
                if why:
                    self.note(f"Keras rows (keras_cnn, mobilenet_v2) skipped in every section: {why}")
                else:
                    setup_tensorflow(self.threads)
                    from bench.zoo import keras_cases
                    self._keras_cases = keras_cases(names)
        return self._keras_cases

    def note(self, text):
        if text not in self.notes:
            self.notes.append(text)
            print(f"  note: {text}", flush=True)


def setup_tensorflow(threads=2):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet():
        import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:        # already initialized
        pass
    return tf


@contextlib.contextmanager
def quiet():
    """Silence the converters' progress prints, warnings and log chatter,
    including what native code writes to file descriptors 1 and 2 (the
    TorchScript exporter dumps whole graphs there when it fails)."""
    loggers = [logging.getLogger(n) for n in ("torch", "torch.onnx", "torch.export", "tf2onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [devnull]:
            os.close(fd)
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
