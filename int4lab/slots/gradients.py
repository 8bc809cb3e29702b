"""Slots bit_split and lss_gather (lesson 06). Checks, hints and bench: to be completed."""
from ..gradquant import bit_split_spec, lss_gather_spec, validate_lss_gather
from ..registry import Slot, register

register(Slot(name="bit_split", spec=bit_split_spec, lesson="06", stochastic=True,
              triton="int4lab.kernels.bit_split:bit_split"))
register(Slot(name="lss_gather", spec=lss_gather_spec, validate=validate_lss_gather, lesson="06",
              stochastic=True, triton="int4lab.kernels.lss_gather:lss_gather"))
