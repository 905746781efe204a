"""torch oracles for irtool.ir.ops.conv."""
ORACLES = {}
