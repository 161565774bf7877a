"""refinegan: SimGAN refinement of simulated galaxy postage stamps.

Stages (each also a ``refinegan <stage>`` command):

- `refinegan.sim.simulate.simulate` -- GalSim stamps with labels
- `refinegan.io` -- the HDF5 stamp contract every stage reads and writes
- `refinegan.config` -- config loading, schema validation, ``--set`` overrides
"""

__version__ = "0.1.0"
