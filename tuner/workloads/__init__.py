"""Built-in workloads. Framework modules import their framework when a factory is called."""
