"""The rubric Reasoning RM as its own application: the model (`model`, `inputs`), its training data and
rubric (`data`, `rubric`), training (`losses`, `metrics`, `training`), evaluation on held-out step-error
sets (`heldout`, `evaluation`, `report`) and the scoring service (`service`).

The reward side only needs `planlift.rm` (the scorer interface and its backends); `planlift.rm.learned`
loads a model from here when a run uses `rm=learned`. Import the submodules directly.
"""
