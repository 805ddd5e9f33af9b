"""The benchmarks of a source checkout; run each as ``python -m benchmarks.<name>`` from the repository root."""
