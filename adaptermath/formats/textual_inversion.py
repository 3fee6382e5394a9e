"""Textual-inversion embeddings: load, compose with the same expressions, save with the token name.

An embedding is a few learned token vectors V (n × d) that replace a placeholder token's input
embedding; nothing else in the model changes. The vectors *are* the parameters, so parameter
space and delta space coincide and an expression Σ cᵢ·Xᵢ evaluates to V = Σ cᵢ·Vᵢ exactly
(float32, then the first operand's dtype). Operands must have the same slots and shapes.

Files read (see docs/formats.md):

* ``a1111-pt``  — A1111 ``.pt``: ``{"string_to_param": {"*": V}, "string_to_token": …, "name": token, …}``
  (a pickle: read only with ``allow_pickle=True``, and then with ``torch.load(weights_only=True)``);
* ``a1111``     — A1111 ``.safetensors``: ``{"emb_params": V}``; the token is the file name;
* ``sdxl``      — SDXL ``.safetensors``: ``{"clip_l": V_l, "clip_g": V_g}``; the token is the file name;
* ``diffusers`` — diffusers ``learned_embeds.safetensors`` (or ``.bin``, a pickle): ``{token: V}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from ..errors import AdapterLoadError, AdapterMathError, CompositionError
from ..expression import LinearCombination, parse_expression
from ..io import atomic_output_file

EMBEDDING_FORMATS = ("a1111-pt", "a1111", "sdxl", "diffusers", "diffusers-bin")
SDXL_SLOTS = ("clip_l", "clip_g")
SINGLE_SLOT = "embedding"
PROVENANCE_KEY = "adaptermath.provenance"
_A1111_PT_KEPT = ("string_to_token", "sd_checkpoint", "sd_checkpoint_name")


class EmbeddingError(AdapterMathError):
    """An embedding file is malformed, or embeddings cannot be combined."""


@dataclass
class Embedding:
    """Token vectors by slot ("embedding", or "clip_l"/"clip_g" for SDXL), in their stored shapes."""

    token: str
    vectors: dict[str, torch.Tensor]
    format: str
    path: Path | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors __metadata__
    extra: dict[str, Any] = field(default_factory=dict)  # A1111 .pt fields kept on save
    provenance: dict[str, Any] | None = None

    @property
    def num_vectors(self) -> int:
        return _as_matrix(next(iter(self.vectors.values()))).shape[0]

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``adaptermath inspect`` prints)."""
        return {
            "type": "textual-inversion embedding", "format": self.format, "token": self.token,
            "vectors": self.num_vectors,
            "slots": {slot: list(t.shape) for slot, t in self.vectors.items()},
            "dtype": str(next(iter(self.vectors.values())).dtype).replace("torch.", ""),
            "norms": {slot: float(t.float().norm()) for slot, t in self.vectors.items()},
            "path": str(self.path) if self.path else None,
        }


def _as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(1, -1) if tensor.dim() == 1 else tensor


def _check_vectors(path: Path, vectors: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for slot, tensor in vectors.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.dim() not in (1, 2) or tensor.numel() == 0:
            raise EmbeddingError(f"{path}: {slot} is not a vector or a matrix of token vectors")
        if not bool(torch.isfinite(tensor).all()):
            raise EmbeddingError(f"{path}: {slot} contains NaN or Inf values")
        out[slot] = tensor.detach()
    return out


def _from_mapping(path: Path, data: Mapping[str, Any], pickled: bool, metadata: dict[str, str]) -> Embedding:
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, Mapping) or len(params) != 1:
            raise EmbeddingError(f"{path}: string_to_param must hold exactly one tensor")
        vectors = _check_vectors(path, {SINGLE_SLOT: next(iter(params.values()))})
        token = str(data.get("name") or path.stem)
        extra = {k: data[k] for k in _A1111_PT_KEPT if k in data}
        return Embedding(token, vectors, "a1111-pt" if pickled else "a1111", path, metadata, extra)
    if "emb_params" in data:
        return Embedding(path.stem, _check_vectors(path, {SINGLE_SLOT: data["emb_params"]}), "a1111", path, metadata)
    if set(SDXL_SLOTS) <= set(data):
        return Embedding(path.stem, _check_vectors(path, {s: data[s] for s in SDXL_SLOTS}), "sdxl", path, metadata)
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) == 1 and len(data) == 1:
        token, tensor = next(iter(tensors.items()))
        return Embedding(token, _check_vectors(path, {SINGLE_SLOT: tensor}), "diffusers-bin" if pickled else "diffusers", path, metadata)
    raise EmbeddingError(f"{path}: not a textual-inversion embedding (keys: {', '.join(sorted(map(str, data))[:5])})")


def load_embedding(path: str | Path, *, allow_pickle: bool = False) -> Embedding:
    """Read an A1111, SDXL or diffusers embedding file (``.pt``/``.bin`` only with ``allow_pickle``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AdapterLoadError(f"{path}: no such embedding file")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                data = {k: handle.get_tensor(k) for k in handle.keys()}
                metadata = dict(handle.metadata() or {})
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AdapterLoadError(f"{path}: not a readable safetensors file ({reason})") from None
        return _from_mapping(path, data, False, metadata)
    if path.suffix in (".pt", ".bin", ".ckpt"):
        if not allow_pickle:
            raise AdapterLoadError(
                f"{path}: is a pickle; pickles can run code when loaded — pass --allow-pickle (allow_pickle=True) "
                "to read it with weights_only=True"
            )
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise AdapterLoadError(f"{path}: cannot read pickled embedding ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, Mapping):
            raise EmbeddingError(f"{path}: does not hold a dictionary")
        return _from_mapping(path, data, True, {})
    raise AdapterLoadError(f"{path}: unknown embedding file type {path.suffix!r} (expected .safetensors, .pt or .bin)")


def _coefficients(combination: LinearCombination, variables: Mapping[str, float]) -> dict[str, float]:
    free = [v for v in combination.free_variables if v not in variables]
    if free:
        raise AdapterMathError(f"unknown name {free[0]!r} in the expression: give an embedding with -a {free[0]}=PATH "
                               f"or a value with --var {free[0]}=NUMBER")
    return combination.coefficients(variables)


def compose_embeddings(expression: str | LinearCombination, operands: Mapping[str, Embedding | str | Path], *,
                       variables: Mapping[str, float] | None = None, token: str | None = None,
                       normalize: bool = False, allow_pickle: bool = False) -> Embedding:
    """V = Σ cᵢ·Vᵢ per slot for the expression's normal form Σ cᵢ·Xᵢ (exact; float32, then the first's dtype).

    ``normalize`` rescales the coefficients so that Σ|cᵢ| = 1. The result keeps the first
    operand's format, shapes, metadata and token name (``token`` overrides it) and records its
    provenance, written by :func:`save_embedding`.
    """
    variables = dict(variables or {})
    combination = expression if isinstance(expression, LinearCombination) else parse_expression(expression, list(operands))
    unused = [n for n in operands if n not in combination.terms]
    if unused:
        raise AdapterMathError(f"embedding {unused[0]!r} is given but not used in the expression")
    coefficients = _coefficients(combination, variables)
    if normalize:
        total = sum(abs(c) for c in coefficients.values())
        if total == 0:
            raise CompositionError("cannot normalise: every coefficient is zero")
        coefficients = {name: c / total for name, c in coefficients.items()}
    loaded = {name: operands[name] if isinstance(operands[name], Embedding) else load_embedding(operands[name], allow_pickle=allow_pickle)  # type: ignore[arg-type]
              for name in combination.operands}
    first_name, first = next(iter(loaded.items()))
    for name, emb in loaded.items():
        if set(emb.vectors) != set(first.vectors):
            raise CompositionError(f"embeddings {first_name!r} ({', '.join(first.vectors)}) and {name!r} ({', '.join(emb.vectors)}) have different text-encoder slots")
        for slot, tensor in emb.vectors.items():
            if _as_matrix(tensor).shape != _as_matrix(first.vectors[slot]).shape:
                raise CompositionError(
                    f"embeddings {first_name!r} and {name!r} differ in shape ({list(_as_matrix(first.vectors[slot]).shape)} vs "
                    f"{list(_as_matrix(tensor).shape)} in {slot}): they need the same number of vectors and the same text encoder"
                )
    vectors: dict[str, torch.Tensor] = {}
    for slot, reference in first.vectors.items():
        total = torch.zeros(_as_matrix(reference).shape, dtype=torch.float32)
        for name, c in coefficients.items():
            total.add_(_as_matrix(loaded[name].vectors[slot]).float(), alpha=c)
        vectors[slot] = total.reshape(reference.shape).to(reference.dtype)
    provenance = {
        "format": "adaptermath.provenance/1",
        "kind": "textual-inversion embedding",
        "expression": combination.source,
        "normal_form": str(combination),
        "coefficients": coefficients,
        "variables": variables,
        "token": token or first.token,
        "inputs": [{"name": n, "path": str(e.path) if e.path else None, "token": e.token} for n, e in loaded.items()],
    }
    return Embedding(token or first.token, vectors, first.format, None, dict(first.metadata), dict(first.extra), provenance)


def _format_for(output: Path, requested: str | None, embedding: Embedding) -> str:
    fmt = requested or embedding.format
    if fmt not in EMBEDDING_FORMATS:
        raise EmbeddingError(f"embedding format must be one of {', '.join(EMBEDDING_FORMATS)}, got {fmt!r}")
    pickled = fmt in ("a1111-pt", "diffusers-bin")
    if pickled and output.suffix not in (".pt", ".bin"):
        raise EmbeddingError(f"format {fmt} is a pickle; name the output *.pt or *.bin (got {output.name})")
    if not pickled and output.suffix != ".safetensors":
        raise EmbeddingError(f"format {fmt} is a safetensors file; name the output *.safetensors (got {output.name})")
    if fmt == "sdxl" and set(embedding.vectors) != set(SDXL_SLOTS):
        raise EmbeddingError("only an SDXL embedding (clip_l and clip_g) can be written as sdxl")
    if fmt != "sdxl" and set(embedding.vectors) != {SINGLE_SLOT}:
        raise EmbeddingError(f"an SDXL embedding (clip_l and clip_g) cannot be written as {fmt}")
    return fmt


def save_embedding(embedding: Embedding, output: str | Path, *, format: str | None = None, force: bool = False,
                   protected: Iterable[str | Path | None] = ()) -> Path:
    """Write ``embedding`` atomically in ``format`` (default: its own), keeping its token name.

    The token is stored where the format has a place for it (the A1111 ``.pt`` ``name``, the
    diffusers key); A1111/SDXL ``.safetensors`` files are named after their token by the user
    interfaces that load them, so name the output ``<token>.safetensors``.
    """
    output = Path(output).expanduser()
    fmt = _format_for(output, format, embedding)
    with atomic_output_file(output, force=force, protected=protected) as tmp:
        if fmt == "a1111-pt":
            tensor = embedding.vectors[SINGLE_SLOT]
            data: dict[str, Any] = {"string_to_token": {"*": 265}, **embedding.extra, "name": embedding.token,
                                    "string_to_param": {"*": tensor}}
            if embedding.provenance is not None:
                data["adaptermath_provenance"] = json.dumps(embedding.provenance, sort_keys=True, ensure_ascii=False)
            torch.save(data, str(tmp))
        elif fmt == "diffusers-bin":
            torch.save({embedding.token: embedding.vectors[SINGLE_SLOT]}, str(tmp))
        else:
            from safetensors.torch import save_file

            if fmt == "a1111":
                tensors = {"emb_params": embedding.vectors[SINGLE_SLOT]}
            elif fmt == "sdxl":
                tensors = {slot: embedding.vectors[slot] for slot in SDXL_SLOTS}
            else:
                tensors = {embedding.token: embedding.vectors[SINGLE_SLOT]}
            metadata = dict(embedding.metadata)
            if embedding.provenance is not None:
                metadata[PROVENANCE_KEY] = json.dumps(embedding.provenance, sort_keys=True, ensure_ascii=False)
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata or None)
    return output


def compose_embedding_files(expression: str, operands: Mapping[str, str | Path], output: str | Path, *,
                            variables: Mapping[str, float] | None = None, token: str | None = None,
                            normalize: bool = False, force: bool = False, allow_pickle: bool = False) -> dict[str, Any]:
    """Compose embedding files and save the result to ``output`` (the ``adaptermath compose`` path for embeddings).

    Returns a JSON-ready summary: output, token, format, normal form, coefficients, vector shapes.
    """
    result = compose_embeddings(expression, operands, variables=variables, token=token, normalize=normalize,
                                allow_pickle=allow_pickle)
    written = save_embedding(result, output, force=force, protected=list(operands.values()))
    assert result.provenance is not None
    return {
        "output": str(written),
        "type": "textual-inversion embedding",
        "format": result.format,
        "token": result.token,
        "expression": result.provenance["expression"],
        "normal_form": result.provenance["normal_form"],
        "coefficients": result.provenance["coefficients"],
        "slots": {slot: list(t.shape) for slot, t in result.vectors.items()},
    }
