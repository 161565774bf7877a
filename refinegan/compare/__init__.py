"""The ``compare`` and ``summary`` stages: refined vs real vs sim statistics and calibration.

- `compare`: the stage (`refinegan.compare.compare.compare`)
- `measure`: per-image `Measurement` of a set; `stats`: the statistics; `morphology`: statmorph
- `samples`: `Samples`, what every table reads; `tables`: spectra, distance tables, label drift
- `distances`: two-sample distances and classifier AUCs; `classifiers`: the classifier tests
- `calibration`: REGAUSS m, c, paired differences and compare's calibration step
- `store`: compare.h5; `plots`: captioned figures; `summary`: the HTML summary page
"""
