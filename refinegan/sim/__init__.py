"""The ``simulate`` stage: labelled GalSim galaxy stamps.

- `population`: per-galaxy parameters drawn from (seed, stream, galaxy id) alone
- `render`: batched k-space drawing of many galaxies through one PSF
- `simulate`: the stage (`refinegan.sim.simulate.simulate`, ``refinegan simulate``)
"""
