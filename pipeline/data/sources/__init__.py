"""Dataset sources, one module per ``data.source``: the files each needs, how they reach data/raw, and
which readers (pipeline/data/readers.py) turn them into interactions and item text.

The names and the class of each: pipeline/source_names.py; the classes by name: ``registry``. The interface
(``base.Source``) and a worked example: docs/adding_a_dataset.md.
"""
