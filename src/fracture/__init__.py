"""Bone-fracture classification and localisation on X-rays with Keras 3.

Subpackages:
    fracture.data: reading YOLO / COCO exports, the dataset index, the tf.data pipeline,
        synthetic data and the data inspector.
"""

__version__ = "0.1.0"
