"""Using trained models: compiled inference, saliency, export to SavedModel/TFLite, teaching a model
its mistakes, comparing runs.

May import: cnnlab.uploads and everything below it.
"""
