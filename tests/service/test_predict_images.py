"""/predict with image files: real test digits rendered to PNG and JPEG in several sizes, colours and
polarities must get the same answers as their pixel arrays."""

from __future__ import annotations

import io
import threading
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from models.datasets import load_builtin, split_dataset
from service.jobs.runner import run_job
from service.main import create_app
from service.predict.images import to_mnist
from tests.helpers import LOGREG_SPEC, assert_error, digits_test_split, settings_with


@pytest.fixture(scope="module")
def api(runtime, trained_classifier):
    with TestClient(create_app(runtime=runtime, reconcile=False, tune_process=False)) as c:
        c.model = trained_classifier
        yield c


@pytest.fixture(scope="module")
def digits():
    test = digits_test_split()
    return test.x.numpy()[:120, 0], test.y.numpy()[:120]


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def light_on_dark(digit: np.ndarray, size: int) -> bytes:
    return png(Image.fromarray((digit * 255 / 16).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR))


def dark_on_light_with_margin(digit: np.ndarray) -> bytes:
    ink = Image.fromarray((255 - digit * 255 / 16).astype(np.uint8)).resize((60, 60), Image.Resampling.BICUBIC)
    paper = Image.new("L", (140, 100), 255)
    paper.paste(ink, (50, 25))
    return png(paper)


def blue_on_yellow(digit: np.ndarray) -> bytes:
    ink = np.asarray(Image.fromarray((digit * 255 / 16).astype(np.uint8)).resize((48, 48)), dtype=np.float32) / 255
    paper, blue = np.array([250, 230, 90], np.float32), np.array([20, 30, 160], np.float32)
    rgb = paper * (1 - ink[..., None]) + blue * ink[..., None]
    return png(Image.fromarray(rgb.astype(np.uint8), "RGB"))


def transparent_canvas(digit: np.ndarray) -> bytes:
    alpha = Image.fromarray((digit * 255 / 16).astype(np.uint8)).resize((280, 280), Image.Resampling.BILINEAR)
    rgba = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    rgba.putalpha(alpha)
    return png(rgba)


def grayscale_jpeg(digit: np.ndarray) -> bytes:
    return png(Image.fromarray((255 - digit * 255 / 16).astype(np.uint8)).resize((96, 96), Image.Resampling.LANCZOS),
               "JPEG")


def predict_files(client, files: list[bytes], **form) -> dict:
    r = client.post("/predict", files=[("images", (f"d{i}.png", f)) for i, f in enumerate(files)],
                    data={"model": client.model["id"], **form})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("render", [lambda d: light_on_dark(d, 8), lambda d: light_on_dark(d, 64),
                                    dark_on_light_with_margin, blue_on_yellow, transparent_canvas, grayscale_jpeg],
                         ids=["8px", "64px", "dark-on-light-margin", "blue-on-yellow", "transparent", "jpeg"])
def test_rendered_digits_agree_with_their_pixel_arrays(api, digits, render):
    images, labels = digits
    by_pixels = api.post("/predict", json={"instances": images.tolist(), "model": api.model["id"]}).json()
    expected = np.array([p["label"] for p in by_pixels["predictions"]])
    answer = predict_files(api, [render(d) for d in images])
    got = np.array([p["label"] for p in answer["predictions"]])
    assert (got == expected).mean() >= 0.85, f"agreement {(got == expected).mean():.2f}"
    assert (got == labels).mean() >= 0.8
    assert answer["model"]["id"] == api.model["id"]


def test_top_k_lists_the_likeliest_labels(api, digits):
    answer = predict_files(api, [light_on_dark(digits[0][0], 32)], top_k="4")["predictions"][0]
    assert len(answer["top_k"]) == 4 and answer["top_k"][0]["label"] == answer["label"]
    probabilities = [t["probability"] for t in answer["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True)
    r = api.post("/predict", json={"instances": [digits[0][0].tolist()], "model": api.model["id"], "top_k": 2}).json()
    assert len(r["predictions"][0]["top_k"]) == 2


def test_mnist_geometry_fits_20x20_and_centres_the_mass():
    image = Image.new("L", (300, 200), 255)
    ImageDraw.Draw(image).rectangle((40, 30, 70, 150), fill=0)  # a tall bar, off centre, dark on light
    gray = np.asarray(image, dtype=np.float32) / 255
    digit = to_mnist(1 - gray, "bar.png")
    rows, cols = np.nonzero(digit > 0.1)
    assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 < 20
    cy, cx = (np.indices(digit.shape) * digit).sum(axis=(1, 2)) / digit.sum()
    assert abs(cy - 14) <= 0.6 and abs(cx - 14) <= 0.6


@pytest.mark.parametrize("payload,status,fragment", [
    (b"", 422, "the file is empty"),
    (b"definitely not an image", 422, "not a readable PNG or JPEG image"),
    (png(Image.new("L", (50, 50), 255)), 422, "found no ink"),
    (png(Image.new("RGB", (40, 40), (10, 200, 10))), 422, "found no ink"),
])
def test_bad_images_say_what_to_change(api, payload, status, fragment):
    r = api.post("/predict", files=[("images", ("bad.png", payload))], data={"model": api.model["id"]})
    assert_error(r, status, fragment)


def test_form_without_images_or_with_a_bad_top_k(api, digits):
    assert_error(api.post("/predict", data={"model": api.model["id"]}, files=[("other", ("x.png", b"x"))]), 422,
                 'form files named "images"')
    assert_error(api.post("/predict", files=[("images", ("d.png", light_on_dark(digits[0][0], 16)))],
                          data={"model": api.model["id"], "top_k": "0"}), 422, "top_k")


def test_an_image_over_the_size_limit_is_refused(runtime, trained_classifier, digits):
    with TestClient(create_app(settings_with(runtime, max_image_bytes=100), reconcile=False, tune_process=False)) as client:
        r = client.post("/predict", files=[("images", ("big.png", light_on_dark(digits[0][0], 64)))],
                        data={"model": trained_classifier["id"]})
        assert_error(r, 413, "images may be at most 100 bytes")


def test_small_uploads_are_prepared_on_the_event_loop_and_agree_with_the_worker_thread(api, digits):
    """A few small images are decoded on the event loop and share forward passes with other requests
    (service/serving/batching.py); many, or large, ones go to a worker thread. Both give the same answers."""
    from service.predict.service import INLINE_IMAGE_PIXELS, INLINE_IMAGES

    files = [light_on_dark(d, 28) for d in digits[0][: INLINE_IMAGES + 2]]
    batcher = api.app.state.batcher
    before = batcher.requests
    together = predict_files(api, files)["predictions"]  # more than INLINE_IMAGES: a worker thread
    assert batcher.requests == before
    alone = [predict_files(api, [f])["predictions"][0] for f in files]  # on the event loop
    assert batcher.requests - before == len(files)
    for a, t in zip(alone, together):
        assert a["label"] == t["label"]
        assert np.abs(np.array(a["probabilities"]) - np.array(t["probabilities"])).max() <= 2e-6
    large = light_on_dark(digits[0][0], 300)
    assert 300 * 300 > INLINE_IMAGE_PIXELS
    before = batcher.requests
    assert predict_files(api, [large])["predictions"][0]["label"] == alone[0]["label"]
    assert batcher.requests == before


@pytest.fixture(scope="module")
def mnist(runtime, migrated):
    """A classifier of real 28x28 MNIST digits (the built-in mnist-5k), and held-out digits it never saw."""
    with TestClient(create_app(runtime=runtime, reconcile=False, tune_process=False)) as c:
        spec = {**LOGREG_SPEC, "dataset": "mnist-5k", "name": f"mnist-{uuid.uuid4().hex[:8]}",
                "training": {"epochs": 5, "learning_rate": 0.01, "seed": 0}, "optimizer": {"type": "adam"},
                "architecture": {"type": "mlp", "hidden_sizes": [128]}}
        job = c.post("/v1/jobs", json=spec).json()
        run_job(runtime, uuid.UUID(job["id"]), threading.Event())
        model = c.get(f"/v1/jobs/{job['id']}").json()["model"]
    test = split_dataset(load_builtin("mnist-5k"), validation_split=0.1, test_split=0.2, seed=0).test
    return model, test.x.numpy()[:100, 0], test.y.numpy()[:100]


def test_a_28x28_model_answers_json_and_images(client, mnist):
    model, images, labels = mnist
    for instances in (images.reshape(len(images), -1).tolist(), images.tolist()):  # flat, and as 28 rows
        r = client.post("/predict", json={"instances": instances, "model": model["id"]})
        assert r.status_code == 200, r.text
        assert (np.array([p["label"] for p in r.json()["predictions"]]) == labels).mean() >= 0.85
    files = [("images", (f"{i}.png", png(Image.fromarray(image.astype(np.uint8))), "image/png"))
             for i, image in enumerate(images[:20])]
    r = client.post("/predict", data={"model": model["id"]}, files=files)
    assert r.status_code == 200, r.text
    assert (np.array([p["label"] for p in r.json()["predictions"]]) == labels[:20]).mean() >= 0.85
