"""`slatewise train`: learn a slate model from interaction logs.

The pieces, in the order a run uses them: :mod:`.interactions` streams the
log into compact per-user arrays, :mod:`.data` splits them by time and builds
training examples, :mod:`.model` builds the item-vocabulary Llama that vLLM
serves, :mod:`.trainer` runs the loop and the final comparison, and
:mod:`.manifest` records what the model directory contains.
:mod:`.synthetic` writes a small learnable log for the embedded catalogue.
"""
