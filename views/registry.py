"""The app's labs: one slug per phenomenon, shared by the view file, the URL and the core package.

`views/<slug>.py` is the page, `/<slug>` its URL, `explorer/labs/<slug>/` its training core. Tests check
that all three exist for every entry. Because the views live in `views/` (not `pages/`), Streamlit never
runs its old folder-based navigation, so a deep link opens the page directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LabPage:
    """A lab of the app and the one line that tells a student what they will see there."""

    slug: str  # view file, URL path and explorer.labs package
    title: str
    icon: str  # a Material Symbols name: it comes with Streamlit, so it shows where no emoji font is installed
    see: str
    section: str = "Phenomena"  # the navigation group (SECTIONS) the page is listed under

    @property
    def path(self) -> str:
        """The view file, relative to the repository."""
        return f"views/{self.slug}.py"

    @property
    def url(self) -> str:
        """The URL path of the page."""
        return self.slug

    @property
    def package(self) -> str:
        """The lab's core package."""
        return f"explorer.labs.{self.slug}"


SECTIONS = {
    "Phenomena": "What deep networks do that a course tells you about: watch it happen.",
    "Course labs": "The homework every deep-learning course sets, run end to end.",
    "Landscape and size": "The geometry of training and what size does: paths, barriers, sharpness, critical points, "
                          "and parameters against generalisation.",
    "Workbench": "Train and compare image classifiers, transfer what one has learnt to a new task, and learn "
                 "functions of sets.",
}

LABS = [
    LabPage("boundaries", "Decision boundaries", ":material/scatter_plot:",
            "A small network's decision boundary forming live on a 2D data set, neuron by neuron."),
    LabPage("data_maps", "Data maps", ":material/photo_library:",
            "Class balance, a gallery per class and a t-SNE/UMAP/PCA map of the test set: hover for images, "
            "select a region, see why CIFAR-10 is harder than MNIST."),
    LabPage("optimizer_race", "Optimizer race", ":material/sports_score:",
            "SGD to RAdam racing from the same start over a loss surface, then training the same network on "
            "real data with live curves and a final table."),
    LabPage("memorisation", "Memorisation: random labels", ":material/shuffle:",
            "The same network fitting true labels, random labels and noise side by side: 100% training accuracy "
            "on random labels while test accuracy stays at chance."),
    LabPage("double_descent", "Double descent", ":material/ssid_chart:",
            "Test error against model width with label noise: the peak at the interpolation threshold, "
            "epoch-wise double descent, and random features peaking at p = n in seconds."),
    LabPage("function_fitting", "Function fitting: depth vs width", ":material/function:",
            "Deep-narrow against shallow-wide networks of equal parameter count fitting sin(5 pi x)/(5 pi x) and other "
            "1D functions live, and a shallow against a deep CNN on images.", section="Course labs"),
    LabPage("gradient_check", "Gradient check", ":material/rule:",
            "Hand-written backprop against the numerical gradient and autograd, parameter by parameter: the step "
            "size's V, float32 against float64, and planted bugs caught on the right weight.", section="Course labs"),
    LabPage("gradient_norms", "Gradient norms: vanishing gradients", ":material/trending_down:",
            "Per-layer gradient norms of MLPs 2 to 60 layers deep on a log scale: a plain sigmoid net's first-layer "
            "gradient falls by orders of magnitude at depth 10 and to exactly 0 at depth 60, while batch norm, residual connections "
            "and ReLU with He init keep every layer learning.", section="Course labs"),
    LabPage("cyclical_lr", "Cyclical learning rates", ":material/waves:",
            "The triangular cyclical learning rate on CIFAR-10 pixels (DD2424): cost over the schedule, the LR range "
            "test with a suggested range, a coarse-to-fine lambda search and an overfit-100-images check.",
            section="Course labs"),
    LabPage("hyperparameters", "Hyperparameters", ":material/tune:",
            "Learning rate and batch norm, batch size and depth x width on a 3-class spiral: the largest rate "
            "diverges, the smallest never moves, small batches take more steps, depth folds the boundary.",
            section="Course labs"),
    LabPage("weight_trajectories", "Weight trajectories", ":material/timeline:",
            "Eight seeds of one small CNN trained side by side, their weight paths in one PCA plane (layer 1 and the "
            "whole model), a toy 2D version, and one path over its loss surface.", section="Landscape and size"),
    LabPage("interpolation", "Interpolation between solutions", ":material/linear_scale:",
            "Loss and accuracy along the straight line between a small-batch and a large-batch solution and from the "
            "initial weights, batch-norm statistics recomputed, plus filter-normalised random 1D and 2D slices.",
            section="Landscape and size"),
    LabPage("sharpness", "Sharpness vs batch size", ":material/landscape:",
            "The same net trained at batch sizes 16 to 1,024 for the same number of SGD steps: the top Hessian "
            "eigenvalue and Keskar's epsilon-sharpness against the batch size, with input-gradient sensitivity.",
            section="Landscape and size"),
    LabPage("critical_points", "Critical points: the minimal ratio", ":material/center_focus_strong:",
            "A hundred tiny MLPs driven towards zero gradient: the share of positive Hessian eigenvalues against the "
            "loss, exact and by random perturbations.", section="Landscape and size"),
    LabPage("model_size", "Number of parameters vs generalisation", ":material/stacked_line_chart:",
            "Eleven two-conv CNNs, from a few thousand to over a hundred thousand parameters, trained alike: training "
            "and test accuracy and loss against the parameter count on a log axis.", section="Landscape and size"),
    LabPage("classifiers", "Classifiers", ":material/image_search:",
            "Train a simple CNN, ResNet9 or ResNet20 on CIFAR-10, Fashion-MNIST, MNIST or your own images with live "
            "curves: test loss, top-1/top-5 error, a confusion matrix, per-class metrics, the most confident mistakes, "
            "and every run compared in one table.", section="Workbench"),
    LabPage("transfer_learning", "Transfer learning", ":material/swap_horiz:",
            "From scratch, a linear probe, fine-tuning at several learning rates, a scikit-learn probe and gradient "
            "boosting on pixels, on one small cat-vs-dog task in one table, with the source model named.",
            section="Workbench"),
    LabPage("deep_sets", "DeepSets: functions of sets", ":material/workspaces:",
            "Permutation-invariant networks on sets: sums, maxima and digit sums learnt from sets of 2-10 elements and "
            "tested on sets of up to 50, swept over layers and width, against an MLP that sees positions.",
            section="Workbench"),
]
