"""The ``compare`` and ``summary`` stages: refined vs real vs sim statistics and calibration.

- `compare`: the stage (`refinegan.compare.compare.compare`)
- `stats`: per-image statistics; `morphology`: statmorph on a subsample
- `distances`: two-sample distances and classifier AUCs; `classifiers`: the classifier tests
- `tables`: the distance and spectrum tables; `calibration`: REGAUSS m, c, paired differences
- `store`: compare.h5; `plots`: captioned figures; `summary`: the HTML summary page
"""
