"""relviz: image-to-lidar relational distillation, measured and visualised.

The library is split by concern: ``data`` (nuScenes-format datasets, pairs, voxels), ``sparse``
(sparse convolution), ``models`` (MinkUNet students), ``teacher`` (CLIP), ``losses``, ``metrics``,
``toy``, ``train``, ``jobs``, ``eval`` and ``viz``. ``cli`` and the Streamlit app are thin layers on top.
"""

__version__ = "0.1.0"
