"""The steps from a dataset to a release, each one function over one typed config.

``extract`` (activations to a cache), ``saes`` (the SAE grid with feature statistics), ``probes``
(the probe grid with baselines), ``quality_gate`` (samples judged by a classifier of real
images), ``default_model`` (the bundled Fashion-MNIST model). train/ scripts are thin CLIs over
them; :mod:`revelio.release.build` chains them.
"""
