"""nn.Modules produced by fusion methods (ensembles, MoE layers, ...)."""
