"""The ``prepare-real`` stage: the target ("real") stamp set the refiner learns from.

- `prepare_real`: the stage (`refinegan.target.prepare_real.prepare_real`), dispatching on
  ``real.source``
- `mock`: the embedded mock target with known truth (draws the sim population, `refinegan.sim`)
- `observe`: the target's PSF and correlated sky noise (shared by the mock and COSMOS)
- `cosmos`: GalSim COSMOS real galaxies through the target PSF
- `fits`, `hdf5`: the user's own cutouts, through the shared `cutouts` toolkit
"""
