"""Prediction: photos of any shape, the figure (grid sized to the images, file names, a title, colours that mean
something), the command's arguments."""
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from helpers import run_tool
from paddle_mbnet import build_model
from paddle_mbnet.predict import predict, prediction_figure


def test_prediction_figure_colours_names_and_size():
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    items = [("/photos/cat.jpg", image, None), ("cifar test #0", image, 1), ("cifar test #1", image, 2)]
    probs = np.array([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.7, 0.2, 0.1]])
    fig = prediction_figure(items, probs, ["a", "b", "c"], title="predictions of output/run")
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(fig.axes) == 3  # three images: one row of three, no empty cells
    titles = [ax.get_title() for ax in axes]
    assert titles[0].startswith("cat.jpg") and "true" not in titles[0]
    colours = [to_rgba(ax.title.get_color()) for ax in axes]
    assert colours == [to_rgba("0.3"), to_rgba("green"), to_rgba("red")]  # unknown, right, wrong
    assert fig._suptitle.get_text() == "predictions of output/run"


@pytest.mark.parametrize("image_size", [32, 64])
def test_photos_of_any_shape_are_predicted_together(image_size):
    """Photos take the training images' path (CIFAR's 32x32, then the run's size), so mixed shapes stack."""
    rng = np.random.RandomState(0)
    items = [(f"{h}x{w}.jpg", Image.fromarray(rng.randint(0, 255, (h, w, 3), dtype=np.uint8)), None)
             for h, w in [(40, 50), (30, 70), (32, 32)]]
    model = build_model("mobilenet_v1", num_classes=3, scale=0.25, small_input=True)
    probs = predict(model, items, image_size, "cifar")
    assert probs.shape == (3, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_predict_refuses_bad_counts_in_one_line():
    proc = run_tool("predict.py", "no_run", "--cifar-test", "-3", check=False)
    assert proc.returncode == 2 and "--cifar-test N must be 0 or more" in proc.stderr.strip().splitlines()[-1]
