"""Keras 3 models: backbones from keras.applications (plus a small CPU CNN) and heads."""
