"""The app's pages: file, title, icon, the one line a student reads on the home page, and URL path."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageInfo:
    """A page of the app and the one line that tells a student what they will see there."""

    path: str
    title: str
    icon: str  # a Material Symbols name: it comes with Streamlit, so it shows where no emoji font is installed
    see: str
    url: str  # URL path; differs from the file name so Streamlit never serves pages/ files on their own


PAGES = [
    PageInfo("pages/playground.py", "Decision boundaries", ":material/scatter_plot:",
             "A small network's decision boundary forming live on a 2D data set, neuron by neuron.", "boundaries"),
    PageInfo("pages/data.py", "Data", ":material/photo_library:",
             "Class balance, a gallery per class and a t-SNE/UMAP/PCA map of the test set: hover for images, "
             "select a region, see why CIFAR-10 is harder than MNIST.", "data-explorer"),
    PageInfo("pages/optimizers.py", "Optimizer race", ":material/sports_score:",
             "SGD to RAdam racing from the same start over a loss surface, then training the same network on "
             "real data with live curves and a final table.", "race"),
    PageInfo("pages/memorisation.py", "Memorisation: random labels", ":material/shuffle:",
             "The same network fitting true labels, random labels and noise side by side: 100% training accuracy "
             "on random labels while test accuracy stays at chance.", "random-labels"),
    PageInfo("pages/double_descent.py", "Double descent", ":material/ssid_chart:",
             "Test error against model width with label noise: the peak at the interpolation threshold, "
             "epoch-wise double descent, and random features peaking at p = n in seconds.", "double-descent-explorer"),
]
