"""The prediction figure: grid sized to the images, file names, a title, and colours that mean something."""
import numpy as np
from matplotlib.colors import to_rgba

from paddle_mbnet.predict import prediction_figure


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
