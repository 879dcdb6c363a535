"""Training the Weighter and its speaker encoder: what runs only when a model is made, never
when a user embeds a file (that is ``weighter.embedder``).

- ``train.py``: the training loop (from file-level likes, or mixed conversations on the fly),
  with ``config.py`` (TrainConfig), ``data.py`` (batch makers) and ``losses.py``;
- ``cached.py``: training on a frozen frontend's cached frames (how the default is made);
- ``calibration.py``: fitting what a model file keeps beside its weights, on validation data;
- ``augment.py``: the training channel augmenter (rooms, microphones, noise, codecs);
- ``distill.py``: distilling a channel-robust speaker encoder from the frozen Resemblyzer teacher.
"""
