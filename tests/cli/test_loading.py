"""propex.loading: every model spec kind, preprocessing parity, one-line errors."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

import propex
from propex.loading import ImagePreprocess, LoadError, load_images, load_model, parse_preprocess

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()


def _png(path, size=(20, 12), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def test_demo_preprocessing_matches_the_digits_pipeline(tmp_path):
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    from propex.models import preprocess_digits
    images = load_digits().images[:4]
    for i, img in enumerate(images):
        Image.fromarray(np.round(img * 255 / 16).astype(np.uint8), "L").save(tmp_path / f"d{i}.png")
    loaded = load_model("demo")
    assert loaded.kind == "demo" and loaded.input_size == (16, 16) and loaded.labels == [str(i) for i in range(10)]
    x = loaded.inputs([im for _, im in load_images(tmp_path)])
    expected = preprocess_digits(images)
    assert x.shape == (4, 1, 16, 16)
    # PNG stores round(v * 255 / 16): within half a grey level of v / 16 before the (convex) upsampling
    assert (x - expected).abs().max() <= 0.5 / 255 + 1e-6
    assert (loaded.model(x).argmax(1) == torch.as_tensor(load_digits().target[:4])).all()


def test_torchvision_preprocessing_equals_torchvision_transforms(tmp_path):
    tv = pytest.importorskip("torchvision")
    loaded = load_model("resnet18")
    assert loaded.kind == "torchvision" and loaded.input_size == (224, 224) and len(loaded.labels) == 1000
    assert "random weights" in loaded.notes[0]
    img = Image.open(_png(tmp_path / "a.png", size=(300, 260)))
    reference = tv.models.get_model_weights("resnet18").DEFAULT.transforms()(img)
    ours = loaded.preprocess(img)
    assert ours.shape == reference.shape == (3, 224, 224)
    assert (ours - reference).abs().max() < 1e-5
    back = loaded.unnormalize(ours)
    assert back.min() >= 0 and back.max() <= 1


def test_torchvision_weights_file_is_loaded(tmp_path):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(1)
    model = tv.models.resnet18(num_classes=1000)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    loaded = load_model("resnet18", weights=tmp_path / "w.pth", preprocess=["size=64"])
    assert loaded.input_size == (64, 64) and loaded.preprocess.resize == 73   # 256/224 ratio kept
    for (k, a), b in zip(model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), k
    torch.save(tv.models.resnet18(num_classes=7).state_dict(), tmp_path / "bad.pth")
    with pytest.raises(LoadError, match=r"does not fit torchvision resnet18: keys 2 of another shape \(e.g. fc.weight"):
        load_model("resnet18", weights=tmp_path / "bad.pth")


def test_torchscript_and_export_files(tmp_path):
    model = _small_net()
    x = torch.randn(2, 3, 32, 32)
    with pytest.warns(FutureWarning):
        torch.jit.save(torch.jit.script(model), tmp_path / "m.pt")
    batch = ({0: torch.export.Dim("batch")},)
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=batch), tmp_path / "m.pt2")
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "static.pt2")
    with pytest.raises(LoadError, match="exported with a fixed batch size 2.*dynamic_shapes"):
        load_model(str(tmp_path / "static.pt2"))
    expected = propex.explain(model, x, "saliency").attributions
    ts = load_model(str(tmp_path / "m.pt"), preprocess={"size": 32})
    ex = load_model(str(tmp_path / "m.pt2"))
    assert ts.kind == "torchscript" and ex.kind == "export"
    assert ex.input_size == (32, 32) and ex.preprocess.channels == 3     # read from the exported signature
    for loaded in (ts, ex):
        assert torch.allclose(propex.explain(loaded.model, x, "saliency").attributions, expected, atol=1e-6)
        assert torch.allclose(propex.explain(loaded.model, x, "ig", n_steps=8).attributions,
                              propex.explain(model, x, "ig", n_steps=8).attributions, atol=1e-5)
    assert ex.model.training is False


def test_module_factory(tmp_path, monkeypatch):
    (tmp_path / "my_models_px.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def build():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))\n"
        "NOT_CALLABLE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_model("my_models_px:build", preprocess=["size=8"])
    assert loaded.kind == "factory" and loaded.input_size == (8, 8)
    assert loaded.model(torch.zeros(1, 3, 8, 8)).shape == (1, 5)
    torch.save(loaded.model.state_dict(), tmp_path / "w.pt")
    assert load_model("my_models_px:build", weights=tmp_path / "w.pt").kind == "factory"
    with pytest.raises(LoadError, match="has no attribute 'buld'. Did you mean build"):
        load_model("my_models_px:buld")
    with pytest.raises(LoadError, match="is a int, not a factory"):
        load_model("my_models_px:NOT_CALLABLE")
    with pytest.raises(LoadError, match="cannot import module 'no_such_mod_px'"):
        load_model("no_such_mod_px:build")
    sys.modules.pop("my_models_px", None)


@pytest.mark.parametrize("spec, kwargs, message", [
    ("resnt18", {}, r"is not 'demo', a torchvision classifier name.*Did you mean resnet18"),
    ("missing/model.pt2", {}, r"model file 'missing/model.pt2' does not exist"),
    ("demo", {"weights": "nope.pth"}, r"weights file 'nope.pth' does not exist"),
    ("demo", {"device": "cuda:7" if not torch.cuda.is_available() else "bogus"}, r"device"),
    ("demo", {"preprocess": ["sise=3"]}, r"unknown preprocess option 'sise'. Did you mean size"),
    ("demo", {"preprocess": ["mean=0.1,0.2,0.3"]}, r"mean has 3 values but the images have 1 channel"),
    ("", {}, r"non-empty string"),
])
def test_bad_specs_are_one_line_load_errors(spec, kwargs, message):
    with pytest.raises(LoadError, match=message) as info:
        load_model(spec, **kwargs)
    assert "\n" not in str(info.value)


def test_not_a_torchscript_file(tmp_path):
    torch.save(_small_net().state_dict(), tmp_path / "state.pt")
    with pytest.raises(LoadError, match="is not a TorchScript file.*--weights"):
        load_model(str(tmp_path / "state.pt"))
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    with pytest.raises(LoadError, match="is not a torch.export program"):
        load_model(str(tmp_path / "junk.pt2"))


def test_load_images_files_and_folders(tmp_path):
    _png(tmp_path / "b.png")
    _png(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    sub = tmp_path / "sub"
    sub.mkdir()
    _png(sub / "c.png", mode="L")
    found = load_images([tmp_path, sub / "c.png"])
    assert [p.rsplit("/", 1)[-1] for p, _ in found] == ["a.jpg", "b.png", "c.png"]
    assert found[0][1].size == (20, 12)
    with pytest.raises(LoadError, match="does not exist"):
        load_images([tmp_path / "nope.png"])
    with pytest.raises(LoadError, match="is not an image Pillow can read"):
        load_images([tmp_path / "notes.txt"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LoadError, match="holds no image files"):
        load_images(empty)


def test_preprocess_object_is_picklable_and_validated():
    import pickle
    p = ImagePreprocess(size=(4, 6), mean=(0.5,), std=(0.5,), grayscale=True)
    assert pickle.loads(pickle.dumps(p)) == p
    img = Image.fromarray(np.full((10, 10), 255, np.uint8), "L")
    assert torch.allclose(p(img), torch.ones(1, 4, 6))
    assert parse_preprocess(["size=3x5", "grayscale=yes", "std=0.2"]) == {"size": (3, 5), "grayscale": True,
                                                                          "std": (0.2,)}
    with pytest.raises(LoadError, match="std='0' must be one number or three"):
        parse_preprocess({"std": "0"})
