"""planlift's Hydra launcher plugin (Hydra finds plugins in the `hydra_plugins` namespace package)."""
