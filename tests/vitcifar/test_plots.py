"""The figures as a user reads them: what is drawn, in which order, on which scale, with
which words."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.image import AxesImage

from vitcifar.plots import (
    cell_text,
    misclassified_order,
    plot_attention,
    plot_confusion,
    plot_misclassified,
    plural,
)

CLASSES = ["cat", "dog", "ship"]


def test_plural_forms():
    assert plural(1, "epoch") == "1 epoch"
    assert plural(0, "epoch") == "0 epochs"
    assert plural(300, "epoch") == "300 epochs"
    assert plural(1_024, "image") == "1,024 images"
    assert plural(2, "box", "boxes") == "2 boxes"


def test_misclassified_most_confident_first_with_predicted_true_and_probability():
    true = torch.tensor([0, 1, 2, 0, 1, 2])
    pred = torch.tensor([1, 1, 0, 2, 0, 2])  # wrong: 0, 2, 3, 4
    probs = torch.full((6, 3), float("nan"))  # only the mistakes' rows are read
    probs[0] = torch.tensor([0.3, 0.6, 0.1])  # predicted dog at 60%
    probs[2] = torch.tensor([0.95, 0.0, 0.05])  # predicted cat at 95%
    probs[3] = torch.tensor([0.2, 0.1, 0.7])  # predicted ship at 70%
    probs[4] = torch.tensor([0.4, 0.35, 0.25])  # predicted cat at 40%
    assert misclassified_order(true, pred, probs).tolist() == [2, 3, 0, 4]
    assert misclassified_order(true, pred).tolist() == [0, 2, 3, 4]  # no probabilities

    images = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 3, 4, 4).clone()
    fig = plot_misclassified(images, true, pred, CLASSES, probs=probs, n=3)
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == [
        "predicted cat 95%\ntrue ship",
        "predicted ship 70%\ntrue cat",
        "predicted dog 60%\ntrue cat",
    ]
    # each title sits over its own image (the images' pixel value is their index)
    assert [int(ax.images[0].get_array()[0, 0, 0]) for ax in shown] == [2, 3, 0]
    assert fig._suptitle.get_text() == "misclassified: 4 of 6 test images, most confident first"
    assert all(ax.title.get_fontsize() >= 10 for ax in shown)


def test_confusion_cells_are_percentages_without_the_zero_clutter():
    cm = np.array([[87, 13, 0], [0, 100, 0], [1, 0, 299]])
    fig = plot_confusion(cm, CLASSES)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["87", "13", "", "", "100", "", "<1", "", "100"]
    assert not any("0.00" in t or t == "0" for t in texts)
    assert "%" in fig.axes[0].get_title()
    assert cell_text(0.0) == "" and cell_text(0.004) == "<1" and cell_text(0.5) == "50"
    counts = plot_confusion(cm, CLASSES, normalize=False)
    assert [t.get_text() for t in counts.axes[0].texts][:3] == ["87", "13", ""]


@pytest.mark.parametrize("n", [1, 3, 7, 10])
def test_attention_overlaid_on_the_images_with_one_colour_scale(n):
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    heat = torch.rand(n, 8, 8) * torch.linspace(0.2, 1.0, n).view(n, 1, 1)  # unequal maxima
    heat[-1, 0, 0] = 2.0  # the strongest patch of the figure
    fig = plot_attention(images, heat, [f"class {i}" for i in range(n)])
    assert len(fig.axes) == 2 * n + 1  # an image and its overlay per class, one colour bar
    overlays = [ax for ax in fig.axes if len(ax.images) == 2]
    assert len(overlays) == n
    for i, ax in enumerate(overlays):
        picture, layer = ax.images
        np.testing.assert_array_equal(picture.get_array(), images[i].permute(1, 2, 0).numpy())
        assert isinstance(layer, AxesImage) and 0 < layer.get_alpha() < 1  # laid over the image
        assert layer.get_clim() == (0.0, 1.0)  # one scale for every map
        # each map over the figure's common maximum, not over its own
        np.testing.assert_allclose(layer.get_array(), heat[i].numpy() / 2.0, rtol=1e-6)
        assert layer.get_extent() == [-0.5, 31.5, 31.5, -0.5]  # covers the whole image
    assert fig.axes[-1].get_ylabel() == "relative attention"
    width, height = fig.get_size_inches()
    assert width <= 13 and height <= 10  # 10 classes: 5 a row, not 21 inches wide
    titles = [ax.title for ax in fig.axes if ax.get_title().startswith("class")]
    assert len(titles) == n and all(t.get_fontsize() >= 10 for t in titles)


@pytest.mark.parametrize("tta_flip", [False, True])
def test_mistake_probabilities_are_the_models_softmax_as_evaluation_scores_it(tiny_cfg, tta_flip):
    from vitcifar.data import normalize
    from vitcifar.evaluate import mistake_probabilities
    from vitcifar.model import ViT

    torch.manual_seed(0)
    model = ViT(tiny_cfg).eval()
    images = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8)
    wrong = torch.tensor([1, 4, 6])
    probs = mistake_probabilities(
        model, images, wrong, device=torch.device("cpu"), batch_size=2, tta_flip=tta_flip
    )
    with torch.no_grad():
        x = normalize(images[wrong])
        logits = (model(x) + model(x.flip(-1))) / 2 if tta_flip else model(x)
    torch.testing.assert_close(probs[wrong], logits.softmax(dim=-1))
    assert torch.isnan(probs[[0, 2, 3, 5]]).all()  # rows of correct predictions: not computed
