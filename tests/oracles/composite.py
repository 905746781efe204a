"""torch oracles for irtool.ir.ops.composite."""
ORACLES = {}
