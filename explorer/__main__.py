"""Command line: `python -m explorer COMMAND ...`; each command lives in the module that owns it."""

from __future__ import annotations

import importlib
import sys

# command -> (module, function taking argv, one-line help); modules are imported only when used
COMMANDS: dict[str, tuple[str, str, str]] = {
    "classify": ("explorer.labs.classifiers.cli", "main",
                 "image classifiers: train a preset (simple, resnet9, resnet20, fast) or your settings; test metrics "
                 "and the table of kept runs (--full: the report's GPU scale, --ship)"),
    "clr": ("explorer.labs.cyclical_lr.cli", "main",
            "cyclical learning rates on CIFAR-10 pixels: clr train | range | search | overfit"),
    "critical": ("explorer.labs.critical_points.cli", "main",
                 "minimal ratio of K tiny MLPs driven to near-zero gradient (exact Hessian and perturbations)"),
    "deepsets": ("explorer.labs.deep_sets.cli", "main",
                 "DeepSets sweep over layers L x width w on a set task (sum, max, digit sum...): test MSE per set size"),
    "fit": ("explorer.labs.function_fitting.cli", "main",
            "depth vs width at an equal parameter count: fit 1d (MLPs on 1D functions) or fit cnn (shallow vs deep CNN)"),
    "gradcheck": ("explorer.labs.gradient_check.cli", "main",
                  "gradient check: hand-written backprop vs numerical gradient vs autograd, with planted bugs"),
    "gradnorms": ("explorer.labs.gradient_norms.cli", "main",
                  "gradient norms per layer of deep MLPs (plain / batch norm / residual): first, middle and last layer"),
    "hyper": ("explorer.labs.hyperparameters.cli", "main",
              "hyperparameter lab: hyper lr (learning rates x batch norm), hyper batch (batch sizes), hyper grid"),
    "info": ("explorer.core.info", "main", "show the device, data folder, cache folder and cached entries"),
    "size": ("explorer.labs.model_size.cli", "main",
             "parameters vs generalisation: eleven two-conv CNNs (8,8)..(128,96), train/test loss and accuracy"),
    "spaces": ("explorer.labs.data_maps.representations", "main",
               "list the embedding spaces (trained models) a map of a data set can use, or train one"),
    "interpolate": ("explorer.labs.interpolation.cli", "main",
                    "loss and accuracy along the line between two solutions (and from init), random slices"),
    "map": ("explorer.labs.data_maps.cli", "main", "compute a 2D map (t-SNE/UMAP/PCA) of a data set into the cache, optionally as CSV"),
    "memorise": ("explorer.labs.memorisation.lab", "main", "memorisation lab: corruption modes, p sweep, width sweep"),
    "sharpness": ("explorer.labs.sharpness.cli", "main",
                  "sharpness vs batch size: top Hessian eigenvalue, epsilon-sharpness, input sensitivity per batch"),
    "shiplist": ("explorer.core.shiplist", "main",
                 "check that cache/shipped and its trust list agree (--write relists, after review)"),
    "transfer": ("explorer.labs.transfer_learning.cli", "main",
                 "transfer learning: scratch, linear probe, fine-tuning at several lrs, sklearn probe, boosting on a "
                 "small CIFAR-10 task"),
    "trajectories": ("explorer.labs.weight_trajectories.cli", "main",
                     "weight trajectories of K seeds in PCA space: trajectories images|toy [--surface N]"),
    "sweep": ("explorer.labs.double_descent.run", "main", "run a double-descent sweep spec (TOML); resumes from the cache"),
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a command's own argument parser."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python -m explorer COMMAND [options]\n\ncommands:")
        for name, (_, _, help_) in COMMANDS.items():
            print(f"  {name:12s} {help_}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module, func, _ = COMMANDS[argv[0]]
    from explorer.core.device import configure_allocator

    configure_allocator()
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
