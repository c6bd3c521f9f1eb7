"""The app's parts on their own: option catalog, upload decoding, digit preprocessing, PNGs."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from propex.serve.session import load_served_model

import propex
from propex.serve.catalog import method_catalog, parse_method_options, parse_metrics
from propex.serve.images import UploadError, _signed_colours, decode_upload, heatmap_png, tensor_png


def test_every_method_accepts_the_options_the_app_sends(digits_model):
    for entry in method_catalog((16, 16)):
        options = parse_method_options([entry["name"]], {}, (16, 16))[entry["name"]]
        assert {o["name"] for o in entry["options"]} <= set(options)
        propex.get_method(entry["name"])(digits_model, **options)      # raises on an unknown option


def test_option_parsing_converts_and_checks():
    got = parse_method_options(["ig", "integrated_gradients", "LRP", "occlusion"],
                               {"ig": {"n_steps": "12"}, "occlusion": {"window": 6, "stride": "3"}}, (32, 32))
    assert got == {"integrated_gradients": {"n_steps": 12, "seed": 0},
                   "lrp": {"composite": "epsilon_plus_flat"},
                   "occlusion": {"window": 6, "stride": 3, "seed": 0}}
    assert parse_method_options(["occlusion"], {}, (224, 224))["occlusion"]["window"] == 28
    with pytest.raises(ValueError, match=r"integrated_gradients.n_steps must be a whole number, got '2.5'"):
        parse_method_options(["integrated_gradients"], {"integrated_gradients": {"n_steps": "2.5"}})
    with pytest.raises(ValueError, match="smoothgrad.noise_level must be a number, got 'lots'"):
        parse_method_options(["smoothgrad"], {"smoothgrad": {"noise_level": "lots"}})
    with pytest.raises(ValueError, match="options for saliency must be an object"):
        parse_method_options(["saliency"], {"saliency": [1]})
    with pytest.raises(ValueError, match="options must be a JSON object"):
        parse_method_options(["saliency"], [1])
    assert parse_metrics(["deletion", "sparseness", "deletion"]) == ["deletion", "sparseness"]


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_upload_accepts_images_and_refuses_the_rest():
    from PIL import Image
    img = decode_upload(_png(np.full((5, 7), 200, np.uint8)), "grey.png")
    assert img.mode == "RGB" and img.size == (7, 5) and img.getpixel((0, 0)) == (200, 200, 200)
    jpeg = io.BytesIO()
    Image.new("RGB", (9, 4), (10, 20, 30)).save(jpeg, format="JPEG")
    assert decode_upload(jpeg.getvalue(), "a.jpg").size == (9, 4)
    with pytest.raises(UploadError, match=r"'a.txt' is not an image Pillow can read \(UnidentifiedImageError\)"):
        decode_upload(b"plain text", "a.txt")
    with pytest.raises(UploadError, match="'cut.png' is not an image Pillow can read"):
        decode_upload(_png(np.zeros((32, 32), np.uint8))[:50], "cut.png")
    with pytest.raises(UploadError, match="'e.png' is empty"):
        decode_upload(b"", "e.png")
    bomb = io.BytesIO()
    Image.new("1", (10_000, 5_001)).save(bomb, format="PNG")          # tiny file, 50 M pixels
    with pytest.raises(UploadError, match=r"10000×5001 pixels; the limit is 50,000,000 pixels"):
        decode_upload(bomb.getvalue(), "bomb.png")


def test_digit_preprocessing_inverts_paper():
    # the web app uses propex.loading's demo preprocessing (one implementation for the CLI and the app)
    from PIL import Image

    from propex.loading import load_model
    from sklearn.datasets import load_digits
    preprocess = load_model("demo").preprocess
    image = load_digits().images[10]                                    # 0..16
    bright_on_dark = np.kron(np.round(image * 255 / 16), np.ones((4, 4))).astype(np.uint8)   # 32x32
    a = preprocess(Image.fromarray(bright_on_dark))
    b = preprocess(Image.fromarray(255 - bright_on_dark))
    assert a.shape == (1, 16, 16)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)                 # paper is inverted
    from propex.models import preprocess_digits
    torch.testing.assert_close(a, preprocess_digits(np.round(image * 255 / 16)[None] * 16 / 255)[0])
    served = load_served_model("demo")
    torch.testing.assert_close(served.preprocess(Image.fromarray(255 - bright_on_dark)), a, atol=1e-6, rtol=0)


def test_pngs_follow_the_red_blue_convention():
    from PIL import Image
    a = torch.zeros(1, 8, 8)
    a[0, 0, 0], a[0, 7, 7] = 1.0, -1.0
    for png in (heatmap_png(a), None):
        rgb = np.asarray(Image.open(io.BytesIO(png))) if png else _signed_colours(a)
        scale = rgb.shape[0] // 8
        assert rgb.shape[:2] == (8 * scale, 8 * scale) and (png is None or scale == 20)
        red, blue, white = rgb[0, 0], rgb[-1, -1], rgb[4 * scale, 4 * scale]
        assert red[0] > 200 and red[2] < 100 and blue[2] > 200 and blue[0] < 100
        assert (white > 240).all()
    x = torch.linspace(-2, 2, 3 * 4 * 5).reshape(3, 4, 5)
    with Image.open(io.BytesIO(tensor_png(x))) as img:
        assert img.size == (5 * 40, 4 * 40) and img.mode == "RGB"        # enlarged to >= 160 px
        arr = np.asarray(img)
    assert arr.min() == 0 and arr.max() == 255                          # min-max scaled
    with pytest.raises(ValueError, match=r"cannot draw an input of shape \(2, 4, 4\)"):
        tensor_png(torch.zeros(2, 4, 4))
