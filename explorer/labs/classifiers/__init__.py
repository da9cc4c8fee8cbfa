"""Image-classifier workbench: train a CNN family on an image data set, evaluate it on the test split (loss, top-1
and top-5 error, confusion matrix, per-class metrics, the most confident mistakes) and compare every kept run.

config.py holds the frozen settings and their command-line flags, presets.py the course report's three recipes
(and the engine's fastest one), workbench.py the run itself, its evaluation and the comparison table, cli.py the
`python -m explorer classify` command.
"""
