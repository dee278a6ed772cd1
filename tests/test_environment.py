"""Every pinned package installs and imports the way relviz uses it."""

import importlib.metadata

import pytest


def test_torch_pins():
    import torch
    import torchvision

    assert torch.__version__.split("+")[0] == "2.13.0"
    assert torchvision.__version__.split("+")[0] == "0.28.0"
    # the registry's CUDA build (the CPU-only wheel breaks torchvision's compiled ops)
    assert "+cpu" not in torch.__version__
    assert torchvision.ops.nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([1.0]), 0.5).tolist() == [0]


def test_numpy_below_2_for_devkit():
    import numpy

    assert int(numpy.__version__.split(".")[0]) < 2
    assert importlib.metadata.version("nuscenes-devkit") == "1.2.0"


def test_open_clip_vit_b16_random_init():
    import open_clip
    import torch

    model = open_clip.create_model("ViT-B-16", pretrained=None)
    assert model.visual.proj.shape == (768, 512)
    tokens = open_clip.get_tokenizer("ViT-B-16")(["a car"])
    with torch.no_grad():
        assert model.encode_text(tokens).shape == (1, 512)


@pytest.mark.parametrize("module", [
    "nuscenes.nuscenes", "nuscenes.eval.lidarseg.utils", "open3d", "streamlit", "streamlit.testing.v1",
    "plotly.graph_objects", "sklearn.linear_model", "skimage.segmentation", "safetensors.torch", "typer",
    "psutil", "pandas", "pytest", "playwright.sync_api", "scipy.stats", "torch.utils.tensorboard",
    "tensorboard.backend.event_processing.event_accumulator",
])
def test_imports(module):
    importlib.import_module(module)


def test_open3d_raycasting_available():
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(o3d.geometry.TriangleMesh.create_box()))
    rays = o3d.core.Tensor([[0.5, 0.5, 5.0, 0.0, 0.0, -1.0]], dtype=o3d.core.Dtype.Float32)
    # float32 ray-triangle intersection: ~10 roundings on values <= 5 (ray origin, box corners):
    # |t - 4| <= 10 * 5 u32 = 3e-6; 1e-5 is that with ~x3 safety
    assert abs(scene.cast_rays(rays)["t_hit"].numpy()[0] - 4.0) < 1e-5
