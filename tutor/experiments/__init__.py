"""Experiment drivers shared by the notebooks and the scripts that precompute multi-seed results.

Each module here is runnable (``python -m tutor.experiments.<name> --help``) and writes its results
with the command, date and versions to ``data/results/``.
"""
