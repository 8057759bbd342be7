"""What to build: ModelConfig and presets, fit settings, the layer plan and Keras building,
pretrained backbones, layer sizes read from a saved model's config.

May import: cnnlab.data and the shared leaves (cnnlab.text, cnnlab.settings).
"""
