"""Typed errors of irtool. Every message is meant for the user: it says what is
wrong and, where it can, what to do. The CLI prints `str(error)` on one line."""


class IRToolError(Exception):
    """Base of every error irtool raises on purpose."""


class IRTypeError(IRToolError):
    """A shape or dtype rule rejected its inputs."""


class GraphError(IRToolError):
    """A graph is malformed (verify failed, unknown value, bad mutation)."""


class RuntimeFailure(IRToolError):
    """A kernel failed while running a graph; the message names the node."""


class AutodiffError(IRToolError):
    """A gradient could not be built (missing rule, non-scalar loss...)."""


class FileFormatError(IRToolError):
    """A model file is truncated, tampered with, or not what its name says."""


class UnsupportedError(IRToolError):
    """An op or feature has no mapping; the message lists what is missing."""


class ExportError(IRToolError):
    """An exporter could not write its output."""
