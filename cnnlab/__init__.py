"""CNN Lab engine: data sets, model configs, training, runs, preprocessing and charts.

Pure Python: nothing here imports streamlit, and Keras/TensorFlow are imported lazily
inside the functions that need them.
"""

__version__ = "0.1.0"  # the one home of the version: pyproject.toml reads it
