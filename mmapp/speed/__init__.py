"""Training-speed code, kept apart from the readable model and engine.

* ``teacher_forcing.py``: faster teacher-forcing loops for the recurrent decoder (shrinking batch,
  compiled update, fixed shapes), chosen by one switch: ``use_training_path(decoder, path)``;
* ``graphed.py``: a whole training step captured in a CUDA graph and replayed, and the epoch loop
  that drives it (``train_graphed_epoch``);
* ``fixed_shapes.py``: batches padded to a few fixed shapes (and what the padding costs);
* ``schedule.py``: the learning-rate schedule held in a device tensor;
* ``fast_path.py``: what ``mmapp train`` swaps in for ``train.cuda_graphs`` (the three above together).

Each computes what the plain code computes (``RecurrentAttentionDecoder.forward``,
``engine.train_one_epoch``); ``tests/test_speed_paths.py``,
``tests/test_graphed.py`` and ``tests/test_fast_path.py`` show it.
"""
