"""One trainer for all four networks: windows in, a :class:`~gkdcn.models.bundle.ModelBundle` and its history out.

One module per job, each importing only those before it:

- :mod:`~gkdcn.training.windows`: the labelled windows of a split, cut from the stack transformed
  once (the transform fitted on the training windows' cells), and the background pool;
- :mod:`~gkdcn.training.augmentation`: a random dihedral transform of each window;
- :mod:`~gkdcn.training.calibration`: prior-shift calibration of the output logit;
- :mod:`~gkdcn.training.stream`: one member's seeded batches, background draws and loss terms;
- :mod:`~gkdcn.training.loop`: one network's epochs, early stopping or an
  :class:`~gkdcn.training.loop.EpochMonitor`, the bundle (:func:`~gkdcn.training.loop.fit_network`);
- :mod:`~gkdcn.training.stacked`: several seeds at once as one stacked model;
- :mod:`~gkdcn.training.outputs`: a training folder (model file, history, curve);
- :mod:`~gkdcn.training.study`: training on a loaded study (:func:`~gkdcn.training.study.train_study`).

The recipe (``TrainConfig``; ``preset = "authors"`` switches it off): background windows drawn
every epoch and mixed into each batch, the GK prior term on them for GK models, augmentation
(dihedral transforms and Gaussian value noise), and prior-shift calibration. Device and training
precision are :mod:`gkdcn.runtime`'s. :mod:`gkdcn.train` re-exports the public names in one place.
"""
