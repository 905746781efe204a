"""Helpers that make sample inputs for the generated op tests."""


def rand(rng, *shape, dtype="float32", low=-2.0, high=2.0):
    return rng.uniform(low, high, size=shape).astype(dtype)


def positive(rng, *shape, dtype="float32", low=0.5, high=2.0):
    return rng.uniform(low, high, size=shape).astype(dtype)


def ints(rng, *shape, low=0, high=5, dtype="int64"):
    return rng.integers(low, high, size=shape).astype(dtype)


def bools(rng, *shape):
    return rng.random(shape) < 0.5
