"""DeepSets (Zaheer et al. 2017): permutation-equivariant layers, an invariant readout, set tasks, a sweep."""
